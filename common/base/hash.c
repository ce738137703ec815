/*
 * hash.c - SHA-256 through OpenSSL's EVP interface (libcrypto).
 *
 * Shards are named by the lowercase hex SHA-256 of their bytes, so the
 * coordinator and the workers must agree on it bit for bit; both call this.
 * EVP picks the CPU's SHA extensions where present (about 2 GB/s), which
 * keeps hashing a large shard cheap next to streaming it.
 */
#include "hash.h"

#include <openssl/evp.h>

#include "error.h"

void ts_sha256_hex(const void *data, size_t len,
                   char out[TS_SHA256_HEX_LEN + 1]) {
  static const char hex[] = "0123456789abcdef";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  /* EVP_Digest fails only on allocation failure inside OpenSSL; that is an
   * environment failure we cannot report through this void interface, and
   * a wrong shard name would be silently harmful, so it is an invariant. */
  int ok = EVP_Digest(data ? data : "", len, digest, &digest_len,
                      EVP_sha256(), NULL);
  TS_ASSERT(ok == 1 && digest_len == TS_SHA256_HEX_LEN / 2);
  for (unsigned int i = 0; i < digest_len; i++) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 0xf];
  }
  out[TS_SHA256_HEX_LEN] = '\0';
}

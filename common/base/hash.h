/* hash.h - content hashes: shards are named by the SHA-256 of their bytes. */
#ifndef TS_HASH_H
#define TS_HASH_H

#include <stddef.h>

#define TS_SHA256_HEX_LEN 64

/* Writes the lowercase hex SHA-256 of data (64 chars + NUL) into out. */
void ts_sha256_hex(const void *data, size_t len, char out[TS_SHA256_HEX_LEN + 1]);

#endif

#!/bin/sh
# certs.sh DIR [N_WORKERS] - a cluster CA and certificates for tests and
# first use: coordinator, worker0..N-1, admin, client. Each carries its role
# as a SPIFFE URI SAN spiffe://tessera/ROLE[/NAME] (TRUST_DOMAIN overrides
# "tessera") and DNS SANs for its own name (coordinator, workerI: the host
# names of the compose cluster) and localhost, an IP SAN 127.0.0.1
# (CERT_HOSTS adds DNS names, CERT_IPS IP addresses). WORKER_FIRST numbers
# the workers from it (default 0). KEY_OWNER=UID[:GID] chowns the role keys (all but ca.key) to
# the user the daemons run as; the compose image's is 10001.
set -eu
dir=${1:?usage: certs.sh DIR [N_WORKERS]}
n=${2:-2}
first=${WORKER_FIRST:-0}
td=${TRUST_DOMAIN:-tessera}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=tessera-ca" \
  -keyout ca.key -out ca.crt 2>/dev/null
make() { # NAME SPIFFE_PATH
  san="URI:spiffe://$td/$2,DNS:$1,DNS:localhost,IP:127.0.0.1"
  for h in ${CERT_HOSTS:-}; do san="$san,DNS:$h"; done
  for a in ${CERT_IPS:-}; do san="$san,IP:$a"; done
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$1.key" \
    -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' \
    "$san" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 365 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
make coordinator coordinator
i=$first
while [ "$i" -lt $((first + n)) ]; do make "worker$i" "worker/worker$i"; i=$((i + 1)); done
make admin admin
make client client
chmod 600 ./*.key
if [ -n "${KEY_OWNER:-}" ]; then
  for k in ./*.key; do [ "$k" = ./ca.key ] || chown "$KEY_OWNER" "$k"; done
fi

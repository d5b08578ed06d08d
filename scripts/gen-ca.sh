#!/usr/bin/env bash
# gen-ca.sh DIR - a throwaway CA and a server certificate for 127.0.0.1/localhost, for
# the Duo emulator. Idempotent: existing files are kept. Also writes other-ca.crt, an
# unrelated CA, so tests can prove a wrong CA is refused.
set -euo pipefail
d="$1"; mkdir -p "$d"; cd "$d"
[ -f server.crt ] && [ -f other-ca.crt ] && exit 0
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=duo-emulator test CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
  -extfile san.ext -out server.crt 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=unrelated CA" \
  -keyout other-ca.key -out other-ca.crt 2>/dev/null

#!/usr/bin/env bash
# gen-ca.sh DIR - a throwaway CA and a server certificate for 127.0.0.1/localhost, for
# the Duo emulator. Idempotent: existing files are kept. Also writes other-ca.crt, an
# unrelated CA, so tests can prove a wrong CA is refused, and services.crt/.key, a
# certificate for the name localhost only (no IP address) that the local PostgreSQL and
# RabbitMQ TLS listeners present: clients verify it as `localhost`, and a client that
# connects as 127.0.0.1 is refused for the host name, as a wrong host would be.
set -euo pipefail
d="$1"; mkdir -p "$d"; cd "$d"
umask 077
services() {
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout services.key -out services.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > services.ext
  openssl x509 -req -in services.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile services.ext -out services.crt 2>/dev/null
  chmod 644 ca.crt other-ca.crt services.crt server.crt
}
if [ -f server.crt ] && [ -f other-ca.crt ]; then
  [ -f services.crt ] || services
  exit 0
fi
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=duo-emulator test CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
  -extfile san.ext -out server.crt 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=unrelated CA" \
  -keyout other-ca.key -out other-ca.crt 2>/dev/null
services

#!/bin/sh
# emulator-entrypoint.sh - starts the Duo emulator in the compose stack: makes a CA and
# a server certificate valid for the service name "emulator" (and localhost) on first
# start, then runs the emulator over HTTPS. Key invariant: the certificates persist in
# $EMU_CERT_DIR (a volume shared read-only with the workers), and ca.crt is readable
# by every user so `duoctl stage create --ca-bundle` can read it in another container.
set -eu
d="${EMU_CERT_DIR:-/certs}"
port="${EMU_PORT:-8443}"
mkdir -p "$d"
if [ ! -s "$d/server.crt" ] || [ ! -s "$d/server.key" ] || [ ! -s "$d/ca.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=duo-emulator compose CA" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=emulator" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:emulator,DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' \
    > "$d/san.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
    -CAcreateserial -days 3650 -extfile "$d/san.ext" -out "$d/server.crt" 2>/dev/null
  rm -f "$d/server.csr" "$d/san.ext"
  chmod 600 "$d/ca.key" "$d/server.key"
  chmod 644 "$d/ca.crt" "$d/server.crt"
fi
here="$(cd "$(dirname "$0")" && pwd)"
emu="${EMU_SCRIPT:-$here/duo_emulator.py}"
exec python3 "$emu" --host "${EMU_HOST:-0.0.0.0}" --port "$port" \
  --cert "$d/server.crt" --key "$d/server.key" "$@"

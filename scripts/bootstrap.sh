#!/usr/bin/env bash
# bootstrap.sh - installs the Debian packages the project builds, tests and runs with.
# Idempotent and quick when everything is present: apt is only touched when a package
# is missing (then `apt-get update` runs first, as on a fresh machine).
set -euo pipefail

PKGS=(build-essential cmake pkg-config clang libclang-rt-14-dev
      librabbitmq-dev libcurl4-openssl-dev libssl-dev libmsgpack-dev libpq-dev
      libcmocka-dev libjansson-dev libmicrohttpd-dev libyajl-dev
      postgresql-15 postgresql-client-15 rabbitmq-server
      python3 python3-duo-client openssl curl docker-compose clang-format prometheus
      python3-pika python3-msgpack python3-jsonschema
      python3-aio-pika python3-pytest python3-venv python3-setuptools python3-wheel mypy)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "bootstrap: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Another apt run (a second checkout's bootstrap) may hold the lock: wait for it.
LOCK=(-o DPkg::Lock::Timeout=900)
$SUDO apt-get "${LOCK[@]}" update -qq
# The rabbitmq-server package tries to start its system service; we never use it.
$SUDO apt-get "${LOCK[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Leave no half-started system broker holding ports or the default cookie.
pkill -u rabbitmq -f beam 2>/dev/null || true

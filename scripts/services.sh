#!/usr/bin/env bash
# services.sh - project-local PostgreSQL 15, RabbitMQ 3.10 and the Duo emulator under
# .run/ on loopback ports that do not clash with system services.
#   services.sh start   start whatever is not running, wait until each is ready
#   services.sh stop    stop them cleanly (fast shutdown)
#   services.sh status  print what is up
#   services.sh env     print the environment (export lines) that reaches them
#   services.sh mqctl ARGS...    rabbitmqctl on the local broker (e.g. import_definitions
#                                FILE, delete_vhost V: tests' throwaway identities)
# Starting twice is a no-op; a crashed run's leftovers (stale pid files) are cleaned.
#
# Identities (passwords made once, kept in .run/secrets.env, mode 0600):
#   PostgreSQL  postgres (superuser: tests, maintenance), duo_owner (owns database duo:
#               migrations, duoctl), duo_enroll/duo_auth/duo_import (the workers: only
#               the tables each uses, granted by `duoctl migrate`); TCP needs a password
#               (scram-sha-256), the socket is reachable by the server's own user only.
#   RabbitMQ    no guest; duo (workers and duoctl: vhost duo, names duo.* only),
#               duo-upstream (an upstream publisher: publish jobs, read its replies),
#               duo-admin (administrator: tests, on vhost / and duo).
# TLS: PostgreSQL accepts TLS on its port and RabbitMQ listens for amqps:// on
# DUO_MQ_TLS_PORT, both with the certificate .run/tls/services.crt for the name
# localhost, signed by .run/tls/ca.crt (scripts/gen-ca.sh).
# Every port is a setting (DUO_PG_PORT, DUO_MQ_PORT, DUO_MQ_TLS_PORT, DUO_MQ_DIST_PORT,
# DUO_EMU_PORT); a port held by another program stops `start` at once, naming it.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${DUO_RUN_DIR:-$ROOT/.run}"
PG_PORT="${DUO_PG_PORT:-55432}"
MQ_PORT="${DUO_MQ_PORT:-55672}"
MQ_DIST_PORT="${DUO_MQ_DIST_PORT:-55682}"
MQ_TLS_PORT="${DUO_MQ_TLS_PORT:-$((MQ_PORT - 1))}"
EMU_PORT="${DUO_EMU_PORT:-58443}"
PGBIN=/usr/lib/postgresql/15/bin
MQBIN=/usr/lib/rabbitmq/bin
MQ_NODE="duo${MQ_PORT}@localhost"

log() { echo "services: $*" >&2; }

# Fails at once when a port this stack needs is held by something else.
port_free() {
  local port="$1" setting="$2" holder
  holder="$(ss -Hltnp "sport = :$port" 2>/dev/null | head -1)"
  [ -z "$holder" ] && return 0
  holder="$(printf '%s' "$holder" | grep -o 'users:(([^)]*))' || true)"
  log "port $port ($setting) is taken by ${holder:-another program}; set $setting to a free port"
  exit 1
}

# The stack's passwords: made once, kept mode 0600, hex so they need no URL escaping.
secrets() {
  local f="$RUN/secrets.env"
  if [ ! -f "$f" ]; then
    (umask 077
     for k in PG_SUPER PG_OWNER PG_ENROLL PG_AUTH PG_IMPORT MQ_ADMIN MQ_WORKER MQ_PUBLISHER; do
       echo "${k}_PW=$(openssl rand -hex 16)"
     done > "$f.tmp")
    mv "$f.tmp" "$f"
  fi
  chmod 600 "$f"
  # shellcheck disable=SC1090
  . "$f"
}

tls_files() {
  "$ROOT/scripts/gen-ca.sh" "$RUN/tls" >/dev/null
}

# PostgreSQL runs as the postgres user, which must be able to reach its data folder. A
# clone under a private home (e.g. /root) is not reachable: then the data lives in a
# folder of its own under /var/tmp, named after this state folder.
pg_dir() {
  if [ "$(id -u)" -ne 0 ] || su postgres -s /bin/sh -c "test -x '$RUN'" 2>/dev/null; then
    echo "$RUN/pg"
  else
    echo "/var/tmp/duo-workers-pg-$(printf '%s' "$RUN" | cksum | cut -d' ' -f1)"
  fi
}

as_postgres() {
  # From /, so the postgres user is not asked to enter a folder it cannot read.
  if [ "$(id -u)" -eq 0 ]; then (cd / && su postgres -s /bin/sh -c "$*"); else sh -c "$*"; fi
}

pg_running() { "$PGBIN/pg_ctl" status -D "$PGDIR/data" >/dev/null 2>&1 || as_postgres "$PGBIN/pg_ctl status -D '$PGDIR/data'" >/dev/null 2>&1; }

pg_start() {
  mkdir -p "$PGDIR"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PGDIR"; fi
  chmod 755 "$RUN"
  if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
    rm -rf "$PGDIR/data"
    as_postgres "$PGBIN/initdb -D '$PGDIR/data' -A trust -U postgres -E UTF8 --locale=C.UTF-8" >"$PGDIR/initdb.log" 2>&1
  fi
  if pg_running; then return 0; fi
  port_free "$PG_PORT" DUO_PG_PORT
  pg_tls_and_hba
  rm -f "$PGDIR/data/postmaster.pid"   # left by a crashed run; pg_ctl status said not running
  as_postgres "$PGBIN/pg_ctl -D '$PGDIR/data' -o \"-p $PG_PORT -k '$PGDIR' -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=${DUO_PG_FSYNC:-on} -c unix_socket_permissions=0700 -c ssl=on -c ssl_cert_file='$PGDIR/tls/server.crt' -c ssl_key_file='$PGDIR/tls/server.key' -c password_encryption=scram-sha-256 -c shared_preload_libraries=pg_stat_statements -c track_io_timing=on\" -l '$PGDIR/postgres.log' -w -t 60 start" >/dev/null
  pg_roles
  log "postgresql up on 127.0.0.1:$PG_PORT (TLS on the same port)"
}

# TCP connections need a password; the socket (mode 0700) only the server's own user.
pg_tls_and_hba() {
  mkdir -p "$PGDIR/tls"
  cp "$RUN/tls/services.crt" "$PGDIR/tls/server.crt"
  cp "$RUN/tls/services.key" "$PGDIR/tls/server.key"
  chmod 600 "$PGDIR/tls/server.key"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$PGDIR/tls"; fi
  cat > "$RUN/pg_hba.conf.tmp" <<HBA
local all all trust
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
HBA
  as_postgres "cat > '$PGDIR/data/pg_hba.conf'" < "$RUN/pg_hba.conf.tmp"
  rm -f "$RUN/pg_hba.conf.tmp"
}

psql_super() { as_postgres "psql -X -q -v ON_ERROR_STOP=1 -h '$PGDIR' -p $PG_PORT -U postgres -d postgres" ; }

# Roles and the project database, made or brought in line on every start (idempotent).
pg_roles() {
  psql_super >/dev/null <<SQL
ALTER ROLE postgres PASSWORD '$PG_SUPER_PW';
SELECT 'CREATE ROLE duo_owner' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'duo_owner')
UNION ALL SELECT 'CREATE ROLE duo_enroll' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'duo_enroll')
UNION ALL SELECT 'CREATE ROLE duo_auth' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'duo_auth')
UNION ALL SELECT 'CREATE ROLE duo_import' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'duo_import')
UNION ALL SELECT 'CREATE DATABASE duo OWNER duo_owner' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'duo')
\\gexec
ALTER ROLE duo_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$PG_OWNER_PW';
ALTER ROLE duo_enroll LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$PG_ENROLL_PW';
ALTER ROLE duo_auth LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$PG_AUTH_PW';
ALTER ROLE duo_import LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$PG_IMPORT_PW';
SQL
}

pg_stop() {
  if [ -d "$PGDIR/data" ] && pg_running; then
    as_postgres "$PGBIN/pg_ctl -D '$PGDIR/data' -m fast -w stop" >/dev/null || true
    log "postgresql stopped"
  fi
}

mq_env() {
  export HOME="$RUN/rabbit/home"
  export RABBITMQ_NODENAME="$MQ_NODE"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$MQ_PORT"
  export RABBITMQ_DIST_PORT="$MQ_DIST_PORT"
  export RABBITMQ_MNESIA_BASE="$RUN/rabbit/mnesia"
  export RABBITMQ_LOG_BASE="$RUN/rabbit/log"
  export RABBITMQ_PID_FILE="$RUN/rabbit/rabbit.pid"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$RUN/rabbit/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$RUN/rabbit/rabbitmq"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  # A CLI tool that cannot start (e.g. status before the first start) writes its crash
  # dump here, never into the caller's working folder.
  export ERL_CRASH_DUMP="$RUN/rabbit/erl_crash.dump"
}

mq_running() { ( mq_env; "$MQBIN/rabbitmq-diagnostics" -q ping >/dev/null 2>&1 ); }

mq_start() {
  mkdir -p "$RUN/rabbit/home" "$RUN/rabbit/mnesia" "$RUN/rabbit/log"
  echo '[].' > "$RUN/rabbit/enabled_plugins"
  (umask 077
   python3 "$ROOT/scripts/mq-definitions.py" --vhost duo --prefix duo \
     --worker "duo:$MQ_WORKER_PW" --publisher "duo-upstream:$MQ_PUBLISHER_PW" \
     --admin "duo-admin:$MQ_ADMIN_PW" > "$RUN/rabbit/definitions.json")
  # Identities come from the definitions at every boot; no guest is ever created on a
  # fresh node (default_user is the administrator), and an older node's guest is deleted.
  cat > "$RUN/rabbit/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$MQ_PORT
listeners.ssl.default = 127.0.0.1:$MQ_TLS_PORT
ssl_options.cacertfile = $RUN/tls/ca.crt
ssl_options.certfile = $RUN/tls/services.crt
ssl_options.keyfile = $RUN/tls/services.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
default_user = duo-admin
default_pass = $MQ_ADMIN_PW
default_user_tags.administrator = true
load_definitions = $RUN/rabbit/definitions.json
vm_memory_high_watermark.relative = 0.4
disk_free_limit.absolute = 50MB
CONF
  chmod 600 "$RUN/rabbit/rabbitmq.conf"
  if mq_running; then return 0; fi
  port_free "$MQ_PORT" DUO_MQ_PORT
  port_free "$MQ_TLS_PORT" DUO_MQ_TLS_PORT
  port_free "$MQ_DIST_PORT" DUO_MQ_DIST_PORT
  ( mq_env
    setsid nohup "$MQBIN/rabbitmq-server" >"$RUN/rabbit/server.out" 2>&1 &
    echo $! > "$RUN/rabbit/server.wrapper.pid" )
  for _ in $(seq 1 120); do
    if ( mq_env; "$MQBIN/rabbitmq-diagnostics" -q check_port_connectivity >/dev/null 2>&1 ); then
      ( mq_env; "$MQBIN/rabbitmqctl" -q delete_user guest >/dev/null 2>&1 || true )
      log "rabbitmq up on 127.0.0.1:$MQ_PORT (amqps on $MQ_TLS_PORT)"; return 0
    fi
    sleep 0.5
  done
  log "rabbitmq did not come up; see $RUN/rabbit/log and $RUN/rabbit/server.out"
  return 1
}

mq_stop() {
  if mq_running; then
    ( mq_env; "$MQBIN/rabbitmqctl" -q stop >/dev/null 2>&1 || true )
    log "rabbitmq stopped"
  fi
  if [ -f "$RUN/rabbit/rabbit.pid" ]; then
    kill "$(cat "$RUN/rabbit/rabbit.pid")" 2>/dev/null || true
    rm -f "$RUN/rabbit/rabbit.pid"
  fi
}

emu_script() { echo "$ROOT/tests/emulator/duo_emulator.py"; }

emu_running() { [ -f "$RUN/emu/pid" ] && kill -0 "$(cat "$RUN/emu/pid")" 2>/dev/null; }

emu_ping() {
  curl -fsS --cacert "$RUN/emu/ca.crt" "https://127.0.0.1:$EMU_PORT/auth/v2/ping" >/dev/null 2>&1
}

emu_start() {
  [ -f "$(emu_script)" ] || return 0
  mkdir -p "$RUN/emu"
  "$ROOT/scripts/gen-ca.sh" "$RUN/emu" >/dev/null
  if emu_running && emu_ping; then return 0; fi
  emu_stop
  port_free "$EMU_PORT" DUO_EMU_PORT
  setsid nohup python3 "$(emu_script)" --host 127.0.0.1 --port "$EMU_PORT" \
    --cert "$RUN/emu/server.crt" --key "$RUN/emu/server.key" \
    >"$RUN/emu/emulator.log" 2>&1 &
  echo $! > "$RUN/emu/pid"
  for _ in $(seq 1 100); do
    if emu_ping; then
      log "duo emulator up on https://127.0.0.1:$EMU_PORT"; return 0
    fi
    sleep 0.1
  done
  log "duo emulator did not come up; see $RUN/emu/emulator.log"
  return 1
}

emu_stop() {
  if emu_running; then
    local pid; pid="$(cat "$RUN/emu/pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "duo emulator stopped"
  fi
  rm -f "$RUN/emu/pid"
}

print_env() {
  local pg="127.0.0.1:$PG_PORT" mq="127.0.0.1:$MQ_PORT"
  cat <<ENV
export DATABASE_URL='postgresql://duo_owner:$PG_OWNER_PW@$pg/duo'
export DUO_DB_URL_ENROLL='postgresql://duo_enroll:$PG_ENROLL_PW@$pg/duo'
export DUO_DB_URL_AUTH='postgresql://duo_auth:$PG_AUTH_PW@$pg/duo'
export DUO_DB_URL_IMPORT='postgresql://duo_import:$PG_IMPORT_PW@$pg/duo'
export DUO_PG_ADMIN_URL='postgresql://postgres:$PG_SUPER_PW@$pg/postgres'
export AMQP_URL='amqp://duo:$MQ_WORKER_PW@$mq/duo'
export DUO_MQ_PUBLISHER_URL='amqp://duo-upstream:$MQ_PUBLISHER_PW@$mq/duo'
export DUO_MQ_ADMIN_URL='amqp://duo-admin:$MQ_ADMIN_PW@$mq/'
export DUO_MQ_TLS_PORT='$MQ_TLS_PORT'
export DUO_TLS_CA_FILE='$RUN/tls/ca.crt'
export DUO_TLS_OTHER_CA_FILE='$RUN/tls/other-ca.crt'
export DUO_EMU_URL='https://127.0.0.1:$EMU_PORT'
export DUO_EMU_HOST='127.0.0.1:$EMU_PORT'
export DUO_CA_FILE='$RUN/emu/ca.crt'
export DUO_RUN_DIR='$RUN'
ENV
}

mkdir -p "$RUN"
PGDIR="$(pg_dir)"
secrets

case "${1:-}" in
  start) mkdir -p "$RUN"; tls_files; pg_start; mq_start; emu_start
         (umask 077; print_env > "$RUN/env") ;;
  stop) emu_stop; mq_stop; pg_stop ;;
  restart-mq) mq_stop; tls_files; mq_start ;;
  restart-pg) pg_stop; tls_files; pg_start ;;
  restart-emu) emu_stop; emu_start ;;
  status)
    pg_running && echo "postgresql: up" || echo "postgresql: down"
    mq_running && echo "rabbitmq: up" || echo "rabbitmq: down"
    emu_running && echo "emulator: up" || echo "emulator: down" ;;
  env) print_env ;;
  mqctl) shift; ( mq_env; "$MQBIN/rabbitmqctl" -q "$@" ) ;;
  *) echo "usage: $0 start|stop|status|env|restart-mq|restart-pg" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# services.sh - project-local PostgreSQL 15, RabbitMQ 3.10 and the Duo emulator under
# .run/ on loopback ports that do not clash with system services.
#   services.sh start   start whatever is not running, wait until each is ready
#   services.sh stop    stop them cleanly (fast shutdown)
#   services.sh status  print what is up
#   services.sh env     print the environment (export lines) that reaches them
# Starting twice is a no-op; a crashed run's leftovers (stale pid files) are cleaned.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${DUO_RUN_DIR:-$ROOT/.run}"
PG_PORT="${DUO_PG_PORT:-55432}"
MQ_PORT="${DUO_MQ_PORT:-55672}"
MQ_DIST_PORT="${DUO_MQ_DIST_PORT:-55682}"
EMU_PORT="${DUO_EMU_PORT:-58443}"
PGBIN=/usr/lib/postgresql/15/bin
MQBIN=/usr/lib/rabbitmq/bin
MQ_NODE="duo${MQ_PORT}@localhost"

log() { echo "services: $*" >&2; }

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
  rm -f "$PGDIR/data/postmaster.pid"   # left by a crashed run; pg_ctl status said not running
  as_postgres "$PGBIN/pg_ctl -D '$PGDIR/data' -o \"-p $PG_PORT -k '$PGDIR' -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=${DUO_PG_FSYNC:-on}\" -l '$PGDIR/postgres.log' -w -t 60 start" >/dev/null
  log "postgresql up on 127.0.0.1:$PG_PORT"
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
}

mq_running() { ( mq_env; "$MQBIN/rabbitmq-diagnostics" -q ping >/dev/null 2>&1 ); }

mq_start() {
  mkdir -p "$RUN/rabbit/home" "$RUN/rabbit/mnesia" "$RUN/rabbit/log"
  echo '[].' > "$RUN/rabbit/enabled_plugins"
  cat > "$RUN/rabbit/rabbitmq.conf" <<CONF
loopback_users = none
listeners.tcp.default = 127.0.0.1:$MQ_PORT
vm_memory_high_watermark.relative = 0.4
disk_free_limit.absolute = 50MB
CONF
  if mq_running; then return 0; fi
  ( mq_env
    setsid nohup "$MQBIN/rabbitmq-server" >"$RUN/rabbit/server.out" 2>&1 &
    echo $! > "$RUN/rabbit/server.wrapper.pid" )
  for _ in $(seq 1 120); do
    if ( mq_env; "$MQBIN/rabbitmq-diagnostics" -q check_port_connectivity >/dev/null 2>&1 ); then log "rabbitmq up on 127.0.0.1:$MQ_PORT"; return 0; fi
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
  cat <<ENV
export DATABASE_URL='postgresql://postgres@127.0.0.1:$PG_PORT/postgres'
export DUO_PG_ADMIN_URL='postgresql://postgres@127.0.0.1:$PG_PORT/postgres'
export AMQP_URL='amqp://guest:guest@127.0.0.1:$MQ_PORT/'
export DUO_EMU_URL='https://127.0.0.1:$EMU_PORT'
export DUO_EMU_HOST='127.0.0.1:$EMU_PORT'
export DUO_CA_FILE='$RUN/emu/ca.crt'
export DUO_RUN_DIR='$RUN'
ENV
}

mkdir -p "$RUN"
PGDIR="$(pg_dir)"

case "${1:-}" in
  start) mkdir -p "$RUN"; pg_start; mq_start; emu_start; print_env > "$RUN/env" ;;
  stop) emu_stop; mq_stop; pg_stop ;;
  restart-mq) mq_stop; mq_start ;;
  restart-pg) pg_stop; pg_start ;;
  restart-emu) emu_stop; emu_start ;;
  status)
    pg_running && echo "postgresql: up" || echo "postgresql: down"
    mq_running && echo "rabbitmq: up" || echo "rabbitmq: down"
    emu_running && echo "emulator: up" || echo "emulator: down" ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|status|env|restart-mq|restart-pg" >&2; exit 2 ;;
esac

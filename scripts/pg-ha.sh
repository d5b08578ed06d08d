#!/usr/bin/env bash
# pg-ha.sh - a PostgreSQL 15 primary and a streaming standby on loopback, for the
# failover chaos run and for trying an HA database on one machine. State under
# .run/pg-ha/ (or /var/tmp when the postgres user cannot reach .run, as in services.sh).
#   pg-ha.sh start [sync|async]  a fresh pair (any previous one is deleted): initdb the
#                                primary, pg_basebackup the standby through replication
#                                slot duo_standby, wait until it streams (sync: until the
#                                primary lists it as its synchronous standby)
#   pg-ha.sh failover [SECS] [LAG]
#                                stop the primary hard (pg_ctl -m immediate: a crash),
#                                wait SECS (default 3, failure detection), promote the
#                                standby and wait until it accepts writes; prints
#                                "failover: lag_bytes=N took_ms=T" (N: WAL the primary had
#                                written that the standby had not flushed). LAG > 0 first
#                                freezes the primary's WAL sender (SIGSTOP) for LAG
#                                seconds: a standby that far behind at the crash, as over
#                                a slow or busy link (sync: commits wait meanwhile)
#   pg-ha.sh env                 export lines: CHAOS_PG_HOSTS, CHAOS_PG_PORTS (both nodes)
#   pg-ha.sh standby-writes      how many writes the standby refused as read-only (its log):
#                                a client that wrote to it had not noticed it was a standby
#   pg-ha.sh status | stop | reset
# Ports: DUO_PG_HA_PORT (default DUO_PG_PORT+1) for the primary, the next for the standby.
# sync sets synchronous_standby_names='*' on the primary only: the promoted standby runs
# without a synchronous partner (it has none), as an HA manager would leave it.
# Key invariant: the services' own PostgreSQL (scripts/services.sh) is never touched.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${DUO_RUN_DIR:-$ROOT/.run}"
PGBIN=/usr/lib/postgresql/15/bin
P1="${DUO_PG_HA_PORT:-$((${DUO_PG_PORT:-55432} + 1))}"
P2=$((P1 + 1))

log() { echo "pg-ha: $*" >&2; }

ha_dir() {
  if [ "$(id -u)" -ne 0 ] || su postgres -s /bin/sh -c "test -x '$RUN'" 2>/dev/null; then
    echo "$RUN/pg-ha"
  else
    echo "/var/tmp/duo-workers-pgha-$(printf '%s' "$RUN" | cksum | cut -d' ' -f1)"
  fi
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && su postgres -s /bin/sh -c "$*"); else sh -c "$*"; fi
}

DIR="$(ha_dir)"
PDATA="$DIR/primary"
SDATA="$DIR/standby"

sql() { "$PGBIN/psql" -X -q -A -t -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2" 2>/dev/null; }

running() { [ -f "$1/postmaster.pid" ] && as_postgres "$PGBIN/pg_ctl status -D '$1'" >/dev/null 2>&1; }

pg_ctl_start() {
  as_postgres "$PGBIN/pg_ctl -D '$1' -l '$1.log' -w -t 60 start" >/dev/null
}

# Settings both nodes share; later lines of postgresql.conf override earlier ones.
node_conf() {
  cat <<CONF
port = $2
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
max_connections = 300
fsync = ${DUO_PG_FSYNC:-on}
wal_level = replica
max_wal_senders = 5
max_replication_slots = 5
hot_standby = on
cluster_name = '$1'
CONF
}

start() {
  local mode="${1:-sync}"
  case "$mode" in sync|async) ;; *) log "mode must be sync or async"; exit 2 ;; esac
  stop
  rm -rf "$DIR"
  mkdir -p "$DIR"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$DIR"; fi
  chmod 755 "$RUN" 2>/dev/null || true
  as_postgres "$PGBIN/initdb -D '$PDATA' -A trust -U postgres -E UTF8 --locale=C.UTF-8" >"$DIR/initdb.log" 2>&1
  { node_conf duo-primary "$P1"
    [ "$mode" = sync ] && echo "synchronous_standby_names = '*'"
    echo "synchronous_commit = on"; } | as_postgres "cat >> '$PDATA/postgresql.conf'"
  pg_ctl_start "$PDATA"
  as_postgres "$PGBIN/pg_basebackup -h 127.0.0.1 -p $P1 -U postgres -D '$SDATA' -R -C -S duo_standby -X stream -c fast" >"$DIR/basebackup.log" 2>&1
  # The copied configuration is the primary's: this node gets its own port, and no
  # synchronous partner once promoted.
  { node_conf duo-standby "$P2"; echo "synchronous_standby_names = ''"; } |
    as_postgres "cat >> '$SDATA/postgresql.conf'"
  pg_ctl_start "$SDATA"
  echo "$mode" > "$DIR/mode"
  local want=async; [ "$mode" = sync ] && want=sync
  for _ in $(seq 1 120); do
    if [ "$(sql "$P1" "SELECT sync_state FROM pg_stat_replication WHERE state = 'streaming'")" = "$want" ]; then
      log "primary 127.0.0.1:$P1, standby 127.0.0.1:$P2 streaming ($mode)"
      return 0
    fi
    sleep 0.5
  done
  log "the standby did not start streaming; see $DIR/*.log"
  return 1
}

failover() {
  local delay="${1:-3}" behind="${2:-0}" t0 lag senders
  senders="$(sql "$P1" "SELECT pid FROM pg_stat_replication")" || senders=""
  if [ "$behind" != 0 ] && [ -n "$senders" ]; then
    kill -STOP $senders
    sleep "$behind"
  fi
  t0=$(date +%s%N)
  lag="$(sql "$P1" "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)), -1) FROM pg_stat_replication")" || lag=-1
  as_postgres "$PGBIN/pg_ctl -D '$PDATA' -m immediate -w -t 60 stop" >/dev/null &
  # A frozen sender would hold the shutdown for 5 s until the postmaster kills it.
  if [ "$behind" != 0 ] && [ -n "$senders" ]; then
    sleep 0.5
    kill -KILL $senders 2>/dev/null || true
  fi
  wait
  sleep "$delay"
  as_postgres "$PGBIN/pg_ctl -D '$SDATA' -w -t 60 promote" >/dev/null
  for _ in $(seq 1 120); do
    if [ "$(sql "$P2" "SELECT pg_is_in_recovery()")" = f ]; then
      echo "failover: lag_bytes=${lag:--1} took_ms=$((($(date +%s%N) - t0) / 1000000))"
      return 0
    fi
    sleep 0.25
  done
  log "the standby was not promoted; see $SDATA.log"
  return 1
}

stop() {
  for d in "$SDATA" "$PDATA"; do
    if running "$d"; then as_postgres "$PGBIN/pg_ctl -D '$d' -m fast -w stop" >/dev/null 2>&1 || true; fi
  done
}

status() {
  for n in "primary $PDATA $P1" "standby $SDATA $P2"; do
    set -- $n
    if running "$2"; then
      echo "$1 127.0.0.1:$3: up, in recovery: $(sql "$3" "SELECT pg_is_in_recovery()")"
    else
      echo "$1 127.0.0.1:$3: down"
    fi
  done
}

case "${1:-}" in
  start) start "${2:-sync}" ;;
  failover) failover "${2:-3}" "${3:-0}" ;;
  env) echo "export CHAOS_PG_HOSTS=127.0.0.1,127.0.0.1 CHAOS_PG_PORTS=$P1,$P2" ;;
  standby-writes) grep -c "in a read-only transaction" "$SDATA.log" 2>/dev/null || true ;;
  status) status ;;
  stop) stop ;;
  reset) stop; rm -rf "$DIR" ;;
  *) echo "usage: $0 start [sync|async]|failover [SECS] [LAG]|env|status|stop|reset" >&2; exit 2 ;;
esac

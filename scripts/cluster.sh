#!/usr/bin/env bash
# cluster.sh - a three-node RabbitMQ cluster on loopback for the clustered chaos run and
# for trying a multi-node deployment on one machine. State under .run/cluster/.
#   cluster.sh start          start duoc1..3@localhost and join 2 and 3 to 1 (idempotent)
#   cluster.sh stop           stop all three nodes
#   cluster.sh stop-node N    stop node N (1..3) only: a node failure
#   cluster.sh start-node N   start node N again; it rejoins the cluster by itself
#   cluster.sh status         rabbitmqctl cluster_status as seen from the first live node
#   cluster.sh urls [WHO]     the AMQP_URL list (all three nodes, comma-separated) of WHO:
#                             worker (default: vhost duo, the workers' and duoctl's user),
#                             publisher (may only publish jobs) or admin (vhost "/" and
#                             duo; the chaos harness, whose prefixes are its own)
#   cluster.sh env            the three lists as shell exports (eval it)
#   cluster.sh reset          stop and delete all cluster state
# Identities are the project's least-privilege users, as scripts/services.sh makes them
# (scripts/mq-definitions.py, loaded at every boot): duo, duo-upstream and duo-admin,
# passwords made once in .run/cluster/secrets.env (0600). No node has a guest user.
# Nodes: duoc<N>@localhost, AMQP 127.0.0.1:5767<N+1>, distribution port 5768<N+1> (or from
# DUO_CLUSTER_PORT / DUO_CLUSTER_DIST_PORT, the first node's; node names from
# DUO_CLUSTER_NAME, so two clusters can run on one machine), one shared Erlang cookie. Quorum queues declared on the cluster get a replica on every node
# (their default initial group size is the cluster size), so one node may fail.
# A second cluster on the machine sets DUO_CLUSTER_PORT, DUO_CLUSTER_DIST_PORT and
# DUO_CLUSTER_NAME (or DUO_CLUSTER_NODE: the stem of the node names, duoc by default):
# epmd is shared.
# Key invariant: the system's own single broker (scripts/services.sh) is never touched.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${DUO_RUN_DIR:-$ROOT/.run}/cluster"
MQBIN=/usr/lib/rabbitmq/bin
BASE_PORT="${DUO_CLUSTER_PORT:-57672}"
BASE_DIST="${DUO_CLUSTER_DIST_PORT:-57682}"
NODE_STEM="${DUO_CLUSTER_NAME:-${DUO_CLUSTER_NODE:-duoc}}"

log() { echo "cluster: $*" >&2; }

node_name() { echo "$NODE_STEM$1@localhost"; }
node_port() { echo $((BASE_PORT + $1 - 1)); }

# Environment of node N; run in a subshell.
node_env() {
  local n="$1" dir="$RUN/n$1"
  export HOME="$RUN/home"   # holds the shared .erlang.cookie
  export RABBITMQ_NODENAME; RABBITMQ_NODENAME="$(node_name "$n")"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT; RABBITMQ_NODE_PORT="$(node_port "$n")"
  export RABBITMQ_DIST_PORT=$((BASE_DIST + n - 1))
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_PID_FILE="$dir/rabbit.pid"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

ctl() { local n="$1"; shift; ( node_env "$n"; "$MQBIN/rabbitmqctl" -n "$(node_name "$n")" "$@" ); }

node_up() { ( node_env "$1"; "$MQBIN/rabbitmq-diagnostics" -n "$(node_name "$1")" -q ping >/dev/null 2>&1 ); }

# The cluster's passwords: made once, kept mode 0600, hex so they need no URL escaping.
secrets() {
  local f="$RUN/secrets.env"
  mkdir -p "$RUN"
  if [ ! -f "$f" ]; then
    (umask 077
     for k in MQ_ADMIN MQ_WORKER MQ_PUBLISHER; do echo "${k}_PW=$(openssl rand -hex 16)"; done \
       > "$f.tmp")
    mv "$f.tmp" "$f"
  fi
  chmod 600 "$f"
  # shellcheck disable=SC1090
  . "$f"
}

prepare() {
  secrets
  mkdir -p "$RUN/home"
  if [ ! -f "$RUN/home/.erlang.cookie" ]; then
    head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$RUN/home/.erlang.cookie"
  fi
  chmod 400 "$RUN/home/.erlang.cookie"
  (umask 077
   python3 "$ROOT/scripts/mq-definitions.py" --vhost duo --prefix duo \
     --worker "duo:$MQ_WORKER_PW" --publisher "duo-upstream:$MQ_PUBLISHER_PW" \
     --admin "duo-admin:$MQ_ADMIN_PW" > "$RUN/definitions.json")
  for n in 1 2 3; do
    mkdir -p "$RUN/n$n/mnesia" "$RUN/n$n/log"
    echo '[].' > "$RUN/n$n/enabled_plugins"
    # No guest: a fresh node's default user is the administrator, and the definitions
    # (the same on every node) bring the project's users.
    (umask 077
     cat > "$RUN/n$n/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$(node_port "$n")
default_user = duo-admin
default_pass = $MQ_ADMIN_PW
default_user_tags.administrator = true
load_definitions = $RUN/definitions.json
vm_memory_high_watermark.relative = 0.2
disk_free_limit.absolute = 50MB
CONF
    # The retry tiers are quorum queues that dead-letter at-least-once into the work
    # queues. When a work queue's leader node stops, a dead-letter publish already sent
    # to it is lost, and RabbitMQ 3.10 sends it again only after this timeout (default
    # 180 s): jobs parked in a retry tier, e.g. copies of running jobs after a node loss,
    # came back minutes late (an auth call's 90 s wait ran out). 5 s bounds that stall;
    # a job that arrives twice is answered from its record.
    cat > "$RUN/n$n/advanced.config" <<'ADV'
[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 5000}]}].
ADV
    )
  done
}

# The URL list for WHO (worker, publisher, admin).
urls() {
  secrets
  local user pw vhost out=""
  case "${1:-worker}" in
    worker) user=duo pw="$MQ_WORKER_PW" vhost=duo ;;
    publisher) user=duo-upstream pw="$MQ_PUBLISHER_PW" vhost=duo ;;
    admin) user=duo-admin pw="$MQ_ADMIN_PW" vhost="" ;;
    *) echo "cluster: urls worker|publisher|admin" >&2; exit 2 ;;
  esac
  for n in 1 2 3; do out="$out${out:+,}amqp://$user:$pw@127.0.0.1:$(node_port "$n")/$vhost"; done
  echo "$out"
}

start_node() {
  local n="$1"
  if node_up "$n"; then return 0; fi
  ( node_env "$n"
    setsid nohup "$MQBIN/rabbitmq-server" >"$RUN/n$n/server.out" 2>&1 & )
  for _ in $(seq 1 180); do
    if ( node_env "$n"; "$MQBIN/rabbitmq-diagnostics" -n "$(node_name "$n")" -q check_port_connectivity >/dev/null 2>&1 ); then
      log "node $(node_name "$n") up on 127.0.0.1:$(node_port "$n")"; return 0
    fi
    sleep 0.5
  done
  log "node $n did not come up; see $RUN/n$n/log"
  return 1
}

stop_node() {
  local n="$1"
  if node_up "$n"; then ctl "$n" -q stop >/dev/null 2>&1 || true; log "node $(node_name "$n") stopped"; fi
}

# Joins node N to node 1 unless it already is a member.
join() {
  local n="$1"
  if ctl 1 -q cluster_status 2>/dev/null | grep -q "$(node_name "$n")"; then return 0; fi
  ctl "$n" -q stop_app >/dev/null 2>&1
  ctl "$n" -q join_cluster "$(node_name 1)" >/dev/null 2>&1
  ctl "$n" -q start_app >/dev/null 2>&1
  log "node $(node_name "$n") joined $(node_name 1)"
}

first_up() { for n in 1 2 3; do if node_up "$n"; then echo "$n"; return 0; fi; done; return 1; }

check_n() { case "${1:-}" in 1|2|3) ;; *) echo "node must be 1, 2 or 3" >&2; exit 2 ;; esac; }

case "${1:-}" in
  start)
    prepare
    for n in 1 2 3; do start_node "$n"; done
    join 2; join 3
    ctl 1 -q await_online_nodes 3 >/dev/null 2>&1 || true
    # A node made by an older cluster.sh still has guest: remove it.
    ctl 1 -q delete_user guest >/dev/null 2>&1 || true ;;
  stop) for n in 3 2 1; do stop_node "$n"; done ;;
  stop-node) check_n "${2:-}"; stop_node "$2" ;;
  start-node) check_n "${2:-}"; prepare; start_node "$2" ;;
  status) n="$(first_up)" || { echo "cluster: no node up"; exit 1; }; ctl "$n" cluster_status ;;
  urls) urls "${2:-worker}" ;;
  env) echo "export DUO_CLUSTER_WORKER_URLS='$(urls worker)'"
       echo "export DUO_CLUSTER_PUBLISHER_URLS='$(urls publisher)'"
       echo "export DUO_CLUSTER_ADMIN_URLS='$(urls admin)'" ;;
  reset) for n in 3 2 1; do stop_node "$n"; done; rm -rf "$RUN" ;;
  *) echo "usage: $0 start|stop|stop-node N|start-node N|status|urls [WHO]|env|reset" >&2; exit 2 ;;
esac

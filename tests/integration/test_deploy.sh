#!/usr/bin/env bash
# test_deploy.sh - the deployment files hold together: docker-compose.yml validates with
# Debian's docker-compose and wires the services as documented; the Dockerfile's build
# stage (its COPY list, Release flags) builds and `cmake --install`s into a prefix; the
# runtime stage installs every library the binaries link; the installed duoctl migrates
# a fresh database and the installed worker serves /healthz with the source tree gone
# (so they can only have used <prefix>/share/duo-workers); the installed systemd units
# pass `systemd-analyze verify`; env.example lists every setting with its default.
# Prints "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
if [ -z "${DUO_PG_ADMIN_URL:-}" ] || [ -z "${AMQP_URL:-}" ]; then
  eval "$("$ROOT/scripts/services.sh" env)"
fi
TMP="$(mktemp -d)"
DB="duodeploy_$$_${RANDOM}"
PREFIX="$TMP/prefix"
WORKER_PID=""
PASS=0
FAIL=0
cleanup() {
  if [ -n "$WORKER_PID" ]; then kill -KILL "$WORKER_PID" 2>/dev/null; fi
  psql "$DUO_PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT

ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1${2:+: $2}"; }
check() { # check NAME COMMAND...: passes when the command succeeds
  local name="$1"; shift
  local out
  if out="$("$@" 2>&1)"; then ok "$name"; else bad "$name" "$(tail -5 <<<"$out")"; fi
}

# ---------------------------------------------------------------- docker-compose.yml
# The passwords compose requires (normally in .env, mode 0600).
COMPOSE_PW=(POSTGRES_PASSWORD=pg-super DB_OWNER_PASSWORD=pg-owner DB_ENROLL_PASSWORD=pg-enroll
  DB_AUTH_PASSWORD=pg-auth DB_IMPORT_PASSWORD=pg-import RABBITMQ_ADMIN_PASSWORD=mq-admin
  RABBITMQ_PASSWORD=mq-duo RABBITMQ_UPSTREAM_PASSWORD=mq-upstream)
compose() { (cd "$ROOT" && env "${COMPOSE_PW[@]}" docker-compose -f docker-compose.yml "$@"); }

compose_tests() {
  if ! command -v docker-compose >/dev/null; then
    bad "docker-compose installed" "run scripts/bootstrap.sh"; return
  fi
  check "compose: config -q" compose config -q
  if (cd "$ROOT" && env -i PATH="$PATH" docker-compose --env-file /dev/null -f docker-compose.yml config -q) >/dev/null 2>&1; then
    bad "compose: refuses to start without the passwords"
  else ok "compose: refuses to start without the passwords"; fi
  local services want="auth emulator enroll grafana import migrate mq-setup postgres prometheus rabbitmq"
  services="$(compose --profile emulator --profile monitoring config --services 2>&1 | sort | tr '\n' ' ')"
  if [ "${services% }" = "$want" ]; then ok "compose: services"; else bad "compose: services" "$services"; fi
  compose config >"$TMP/compose.yml" 2>"$TMP/compose.err" || { bad "compose: config" "$(cat "$TMP/compose.err")"; return; }
  check "compose: wiring" python3 - "$TMP/compose.yml" <<'PY'
import re, sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
s = c["services"]
def need(cond, what):
    if not cond:
        sys.exit("compose: " + what)
def secs(v):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", str(v))
    need(m, "unparsed duration " + str(v))
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]
for name, svc in s.items():
    need("container_name" not in svc, name + " pins container_name (breaks --scale)")
need("pg_isready" in " ".join(s["postgres"]["healthcheck"]["test"]), "postgres healthcheck")
need("rabbitmq-diagnostics" in " ".join(s["rabbitmq"]["healthcheck"]["test"]), "rabbitmq healthcheck")
need(s["rabbitmq"]["image"].startswith("rabbitmq:3.10-management"), "rabbitmq image")
need(s["postgres"]["image"].startswith("postgres:15"), "postgres image")
need(any(":/var/lib/postgresql/data" in str(v) or (isinstance(v, dict) and v.get("target") == "/var/lib/postgresql/data")
         for v in s["postgres"].get("volumes", [])), "postgres data volume")
need(s["migrate"]["command"] == ["duoctl", "migrate"], "migrate command")
need(s["migrate"]["environment"]["DATABASE_URL"].startswith("postgresql://duo_owner:pg-owner@"), "migrate runs as duo_owner")
need(s["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_USER"] not in ("guest", "duo"), "rabbitmq default user is the administrator, not guest")
need("10-duo-roles.sh" in " ".join(str(v) for v in s["postgres"]["volumes"]), "postgres init script makes the roles")
need(s["postgres"]["environment"]["POSTGRES_USER"] != "duo_owner", "postgres superuser is not the owner role")
need(s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy", "migrate waits for postgres")
need("emulator" in s["emulator"].get("profiles", []), "emulator profile")
for m in ("prometheus", "grafana"):
    need("monitoring" in s[m].get("profiles", []), m + " in the monitoring profile")
    for p in s[m].get("ports", []):
        need(str(p.get("host_ip", "")) == "127.0.0.1" if isinstance(p, dict) else str(p).startswith("127.0.0.1:"), m + " port not on loopback")
def mounts(svc):
    out = {}
    for v in s[svc].get("volumes", []):
        if isinstance(v, dict):
            out[v.get("target")] = str(v.get("source"))
        else:
            src, tgt = str(v).split(":")[:2]
            out[tgt] = src
    return out
need(mounts("prometheus").get("/etc/prometheus", "").endswith("deploy/prometheus"), "prometheus config mount")
need("--config.file=/etc/prometheus/prometheus.yml" in s["prometheus"]["command"], "prometheus config file")
g = mounts("grafana")
need(g.get("/etc/grafana/provisioning", "").endswith("deploy/grafana/provisioning"), "grafana provisioning mount")
need(g.get("/var/lib/grafana/dashboards", "").endswith("deploy/grafana/dashboards"), "grafana dashboards mount")
need(mounts("rabbitmq").get("/etc/rabbitmq/enabled_plugins", "").endswith("deploy/rabbitmq/enabled_plugins"), "rabbitmq prometheus plugin")
image = s["migrate"]["image"]
for w in ("enroll", "auth", "import"):
    svc = s[w]
    need(svc["image"] == image, w + " uses the migrate image")
    need(svc["command"] == ["duo-" + w], w + " command")
    d = svc["depends_on"]
    need(d["migrate"]["condition"] == "service_completed_successfully", w + " waits for migrate")
    need(d["rabbitmq"]["condition"] == "service_healthy", w + " waits for rabbitmq")
    need(d["mq-setup"]["condition"] == "service_completed_successfully", w + " waits for the broker users")
    env = svc["environment"]
    need(env["DATABASE_URL"].startswith("postgresql://duo_%s:pg-%s@" % (w, w)), w + " connects as duo_" + w)
    need(env["AMQP_URL"].startswith("amqp://duo:mq-duo@") and env["AMQP_URL"].endswith("/duo"), w + " uses broker user duo on vhost duo")
    need(env.get("METRICS_ADDR") == "0.0.0.0", w + " METRICS_ADDR 0.0.0.0 (containers)")
    for k in ("DATABASE_URL", "AMQP_URL", "DUO_SECRET_KEY", "METRICS_PORT", "LOG_LEVEL"):
        need(k in env, w + " env " + k)
    need(int(env["METRICS_PORT"]) > 0, w + " METRICS_PORT on (the healthcheck needs it)")
    hc = " ".join(svc["healthcheck"]["test"])
    need("/healthz" in hc and "curl" in hc, w + " healthcheck")
    need("ports" not in svc, w + " publishes a port (breaks --scale)")
    grace = int(env.get("SHUTDOWN_GRACE_MS", 30000)) / 1000
    need(secs(svc.get("stop_grace_period", "10s")) > grace, w + " stop_grace_period <= SHUTDOWN_GRACE_MS")
PY
}

# ------------------------------------------------------------------------ Dockerfile
# Reproduces the build stage: copies exactly what its COPY lines copy, then runs its
# cmake RUN instruction verbatim with /build and /opt/duo-workers moved under $TMP.
build_stage_copy() {
  local dst="$TMP/src"
  mkdir -p "$dst"
  awk '/^FROM /{n++} n==1 && /^COPY /{print $2, $3}' "$ROOT/Dockerfile" >"$TMP/copies"
  [ -s "$TMP/copies" ] || return 1
  while read -r from to; do
    mkdir -p "$dst/$(dirname "$to")"
    cp -a "$ROOT/${from%/}" "$dst/${to%/}" || return 1
  done <"$TMP/copies"
}

build_and_install() {
  local run
  run="$(awk '/^FROM /{n++} n==1 && /^RUN .*cmake -S/{f=1} f{print} f && !/\\$/{f=0}' \
    "$ROOT/Dockerfile" | sed -e 's/\\$//' -e '1s/^RUN //' | tr '\n' ' ')"
  grep -q -- "-DCMAKE_BUILD_TYPE=Release" <<<"$run" && grep -q "cmake --install" <<<"$run" ||
    { echo "no Release build + cmake --install RUN in the build stage: $run"; return 1; }
  run="${run//\/opt\/duo-workers/$PREFIX}"
  run="${run// \/build/ $TMP/build}"
  (cd "$TMP/src" && sh -ec "$run") >"$TMP/cmake.log" 2>&1 || { tail -20 "$TMP/cmake.log"; return 1; }
}

installed_files() {
  local f
  for f in bin/duoctl bin/duo-enroll bin/duo-auth bin/duo-import \
           share/duo-workers/migrations/001_init.sql share/duo-workers/env.example \
           lib/systemd/system/duo-worker@.service lib/systemd/system/duo-migrate.service; do
    [ -e "$PREFIX/$f" ] || { echo "missing $f"; return 1; }
  done
  local n; n="$(find "$PREFIX/share/duo-workers/schemas" -name '*.schema.json' | wc -l)"
  [ "$n" -gt 0 ] && [ "$n" -eq "$(find "$ROOT/schemas" -name '*.schema.json' | wc -l)" ] ||
    { echo "schemas: $n installed"; return 1; }
  if grep -rq "@CMAKE_INSTALL_PREFIX@" "$PREFIX/lib/systemd/system"; then echo "unit not configured"; return 1; fi
}

# Every library the installed binaries link directly must come from a package the
# runtime stage installs (or from libc6, which debian:12-slim has).
runtime_libs() {
  local runtime pkgs lib path pkg
  runtime="$(awk '/^FROM /{n++} n==2' "$ROOT/Dockerfile")"
  grep -Eq '^USER +[^0r]' <<<"$runtime" || { echo "runtime stage runs as root"; return 1; }
  grep -Eq '(^| )curl( |$)' <<<"$runtime" || { echo "no curl for the healthcheck"; return 1; }
  pkgs=" $(tr -s ' \\\n' ' ' <<<"$runtime") "
  for lib in $(objdump -p "$PREFIX"/bin/* | awk '/NEEDED/{print $2}' | sort -u); do
    path="$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')"
    [ -n "$path" ] || { echo "cannot resolve $lib"; return 1; }
    pkg="$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1)"
    [ -n "$pkg" ] || pkg="$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1)"
    [ "$pkg" = libc6 ] && continue
    [[ "$pkgs" == *" $pkg "* ]] || { echo "$lib ($pkg) not installed by the runtime stage"; return 1; }
  done
}

# --------------------------------------------------------------- installed binaries
installed_migrate() {
  grep -aq "$PREFIX/share/duo-workers" "$PREFIX/bin/duoctl" || { echo "DUO_DATADIR not compiled in"; return 1; }
  psql "$DUO_PG_ADMIN_URL" -qc "CREATE DATABASE $DB" >/dev/null || return 1
  local url="${DUO_PG_ADMIN_URL%/*}/$DB" out want
  want="$(ls "$PREFIX/share/duo-workers/migrations" | grep -c '^[0-9]*_.*\.sql$')"
  mkdir -p "$TMP/elsewhere"
  out="$(cd "$TMP/elsewhere" && env -u DUO_SOURCE_DIR -u DUO_MIGRATIONS_DIR -u DUO_SCHEMAS_DIR \
    DATABASE_URL="$url" "$PREFIX/bin/duoctl" migrate 2>&1)" || { echo "$out"; return 1; }
  grep -q "\"applied\":$want," <<<"$out" || { echo "expected $want applied: $out"; return 1; }
  [ "$(psql "$url" -XAtqc 'SELECT count(*) FROM schema_migrations')" = "$want" ]
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The worker needs the installed schemas and a migrated database; /healthz says it is
# connected to both. SIGTERM then ends it.
installed_worker() {
  local port out i
  port="$(free_port)"
  (cd "$TMP/elsewhere" && exec env -u DUO_SOURCE_DIR -u DUO_MIGRATIONS_DIR -u DUO_SCHEMAS_DIR \
    DATABASE_URL="${DUO_PG_ADMIN_URL%/*}/$DB" MQ_PREFIX="deploy$$x$RANDOM" \
    DUO_SECRET_KEY="$(openssl rand -base64 32)" METRICS_PORT="$port" LOG_LEVEL=warn \
    "$PREFIX/bin/duo-enroll" >"$TMP/worker.log" 2>&1) &
  WORKER_PID=$!
  for i in $(seq 1 300); do
    out="$(curl -fsS "http://127.0.0.1:$port/healthz" 2>/dev/null)" && break
    kill -0 "$WORKER_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$out" ] || { echo "no /healthz"; cat "$TMP/worker.log"; return 1; }
  kill -TERM "$WORKER_PID"
  wait "$WORKER_PID"
  local rc=$?
  WORKER_PID=""
  [ "$rc" -eq 0 ] || { echo "exit $rc after SIGTERM"; cat "$TMP/worker.log"; return 1; }
}

# --------------------------------------------------------------------- systemd units
units_verify() {
  local dir="$PREFIX/lib/systemd/system" u
  for u in enroll auth import; do
    systemd-analyze verify "$dir/duo-worker@$u.service" || return 1
  done
  systemd-analyze verify "$dir/duo-migrate.service"
}

# The stop timeout must outlast the worker's own drain (the default SHUTDOWN_GRACE_MS).
units_content() {
  local w="$ROOT/deploy/systemd/duo-worker@.service" m="$ROOT/deploy/systemd/duo-migrate.service"
  local line grace stop
  for line in 'ExecStart=@CMAKE_INSTALL_PREFIX@/bin/duo-%i' 'EnvironmentFile=/etc/duo-workers/env' \
              'Restart=on-failure' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'PrivateTmp=yes' \
              'KillSignal=SIGTERM'; do
    grep -qx -- "$line" "$w" || { echo "worker unit lacks $line"; return 1; }
  done
  for line in 'Type=oneshot' 'ExecStart=@CMAKE_INSTALL_PREFIX@/bin/duoctl migrate' \
              'EnvironmentFile=/etc/duo-workers/env'; do
    grep -qx -- "$line" "$m" || { echo "migrate unit lacks $line"; return 1; }
  done
  grace="$(config_default SHUTDOWN_GRACE_MS)"
  stop="$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\?$/\1/p' "$w")"
  [ -n "$stop" ] && [ -n "$grace" ] && [ $((stop * 1000)) -gt "$grace" ] ||
    { echo "TimeoutStopSec=$stop s vs SHUTDOWN_GRACE_MS=$grace"; return 1; }
}

# ------------------------------------------------------------------------ env.example
config_doc() { "$PREFIX/bin/duoctl" config-doc; }
config_default() { config_doc | awk -F' [|] ' -v v="\`$1\`" '$1 == "| " v {print $3}'; }

env_example() {
  local f="$ROOT/deploy/env.example" var def line n=0
  cmp -s "$f" "$PREFIX/share/duo-workers/env.example" || { echo "installed env.example differs"; return 1; }
  while IFS=$'\t' read -r var def; do
    n=$((n + 1))
    line="$(grep -E "^#?$var=" "$f" | head -1)"
    [ -n "$line" ] || { echo "$var missing"; return 1; }
    case "$def" in
      '*(required)*'|'*(unset)*') ;;
      *) [ "$line" = "#$var=$def" ] || { echo "$var: '$line', default is '$def'"; return 1; } ;;
    esac
  done < <(config_doc | awk -F' [|] ' '/^\| `/{v=$1; sub(/^\| `/, "", v); sub(/`$/, "", v); print v "\t" $3}')
  [ "$n" -gt 10 ] || { echo "config-doc printed only $n settings"; return 1; }
  # Both readers take KEY=value lines only: no quotes, no export, no spaces around =.
  if grep -Ev '^(#.*)?$' "$f" | grep -Ev '^[A-Z_][A-Z0-9_]*=[^"'\'' ]*$'; then
    echo "lines above are not plain KEY=value"; return 1
  fi
}

# ------------------------------------------------------------------------------ run
compose_tests
if build_stage_copy; then ok "Dockerfile: build-stage COPY list"; else bad "Dockerfile: build-stage COPY list"; fi
check "cmake --install (Release, the Dockerfile's sources)" build_and_install
if [ -x "$PREFIX/bin/duoctl" ]; then
  check "installed layout" installed_files
  check "Dockerfile: runtime stage has every linked library, curl, non-root" runtime_libs
  # From here on only the prefix remains: the compiled-in source dir is gone.
  rm -rf "$TMP/src" "$TMP/build"
  check "installed duoctl migrates from <prefix>/share/duo-workers" installed_migrate
  check "installed duo-enroll finds its schemas and serves /healthz" installed_worker
  if command -v systemd-analyze >/dev/null; then
    check "systemd-analyze verify" units_verify
  else
    echo "skip systemd-analyze verify: systemd-analyze not installed"
  fi
  check "unit files: required directives, stop timeout > grace" units_content
  check "env.example: every setting with its default" env_example
else
  bad "install-dependent checks skipped (no installed duoctl)"
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]

#!/usr/bin/env bash
# test_cluster_users_serial.sh - scripts/cluster.sh gives its three nodes the project's
# least-privilege broker users, as scripts/services.sh does: no guest on any node, the
# worker, publisher and administrator log in with the passwords `cluster.sh urls` gives,
# and the worker's URLs name vhost duo. A cluster of its own (state in a temporary folder,
# ports of its own), so the shared services and a developer's cluster are untouched; serial
# because three nodes are heavy on a small machine.
# Prints "N passed, M failed"; exits non-zero on any failure.
set -u
ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1${2:+: $2}"; }
free_base() { # three free consecutive ports
  for _ in $(seq 1 50); do
    local b=$((30000 + RANDOM % 20000)) used=0
    for p in $b $((b + 1)) $((b + 2)) $((b + 10)) $((b + 11)) $((b + 12)); do
      ss -Htln "sport = :$p" | grep -q . && used=1
    done
    [ $used = 0 ] && { echo $b; return; }
  done
  echo 0
}
export DUO_RUN_DIR; DUO_RUN_DIR="$(mktemp -d /tmp/duo-cluster-test.XXXXXX)"
base="$(free_base)"
export DUO_CLUSTER_PORT=$base DUO_CLUSTER_DIST_PORT=$((base + 10)) DUO_CLUSTER_NAME="duot$$x"
C="$ROOT/scripts/cluster.sh"
cleanup() { "$C" reset >/dev/null 2>&1; [ -n "${DUO_KEEP_CLUSTER_TEST:-}" ] || rm -rf "$DUO_RUN_DIR"; }
trap cleanup EXIT
ctl() { HOME="$DUO_RUN_DIR/cluster/home" ERL_EPMD_ADDRESS=127.0.0.1 \
          /usr/lib/rabbitmq/bin/rabbitmqctl -n "${DUO_CLUSTER_NAME}$1@localhost" -q "${@:2}" 2>&1; }

"$C" start >/dev/null 2>&1 && ok "cluster starts" || bad "cluster starts"
for n in 1 2 3; do
  users="$(ctl "$n" list_users)"
  if grep -q duo-admin <<<"$users" && ! grep -qw guest <<<"$users"; then
    ok "node $n has the project's users and no guest"
  else
    bad "node $n has the project's users and no guest" "$users"
  fi
done
grep -qw duo <<<"$(ctl 1 list_users)" && ok "the worker user exists" || bad "the worker user exists"
pw_of() { "$C" urls "$1" | cut -d, -f"$2" | sed -E 's#^amqp://[^:]+:([^@]+)@.*#\1#'; }
for who in worker:duo publisher:duo-upstream admin:duo-admin; do
  for n in 1 3; do
    out="$(ctl "$n" authenticate_user "${who#*:}" "$(pw_of "${who%%:*}" "$n")")"
    grep -q "Success" <<<"$out" && ok "${who%%:*} logs in on node $n" ||
      bad "${who%%:*} logs in on node $n" "$out"
  done
done
out="$(ctl 2 authenticate_user guest guest)"
grep -q "Success" <<<"$out" && bad "guest is refused" || ok "guest is refused"
urls="$("$C" urls)"
[ "$(tr ',' '\n' <<<"$urls" | grep -c "/duo$")" = 3 ] && ok "worker URLs name vhost duo" ||
  bad "worker URLs name vhost duo" "${urls//:*@/:***@}"
perm="$(ctl 1 list_user_permissions duo)"
grep -q 'duo.*\^(duo' <<<"$perm" && ok "the worker is confined to duo.* names" ||
  bad "the worker is confined to duo.* names" "$perm"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]

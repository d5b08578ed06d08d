#!/usr/bin/env bash
# test_monitoring.sh - the shipped monitoring holds together: promtool accepts the
# scrape config and the alert rules and passes the rules' unit tests (dead letters,
# worker down, throttling, stalled import); the Grafana dashboard and provisioning
# parse, point at the provisioned data source, and every duo_* metric the dashboard or
# the alerts query is one the workers describe; RabbitMQ's plugin file enables the
# Prometheus plugin the scrape config reads.
# Prints "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail
ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
P="$ROOT/deploy/prometheus"
G="$ROOT/deploy/grafana"
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1${2:+: $2}"; }
check() {
  local name="$1"; shift
  local out
  if out="$("$@" 2>&1)"; then ok "$name"; else bad "$name" "$(tail -8 <<<"$out")"; fi
}

if ! command -v promtool >/dev/null; then
  bad "promtool installed" "run scripts/bootstrap.sh (Debian package prometheus)"
else
  check "promtool check config" promtool check config "$P/prometheus.yml"
  check "promtool check rules" promtool check rules "$P/alerts.yml"
  check "promtool test rules" bash -c "cd '$P' && promtool test rules alerts_test.yml"
  # The rule tests must cover at least these alerts.
  for a in DuoDeadLettersRising DuoWorkerDown DuoHostCircuitOpen; do
    if grep -q "alertname: $a" "$P/alerts_test.yml"; then ok "rule test covers $a"; else bad "rule test covers $a"; fi
  done
  # A broken rule must fail the unit tests (the check can fail).
  tmp="$(mktemp -d)"
  sed 's/for: 2m/for: 20m/' "$P/alerts.yml" >"$tmp/alerts.yml"
  cp "$P/alerts_test.yml" "$tmp/"
  if (cd "$tmp" && promtool test rules alerts_test.yml >/dev/null 2>&1); then
    bad "rule tests catch a changed worker-down delay"
  else
    ok "rule tests catch a changed worker-down delay"
  fi
  rm -rf "$tmp"
fi

check "dashboard and provisioning" python3 - "$ROOT" <<'PY'
import json, re, sys, yaml, pathlib
root = pathlib.Path(sys.argv[1])
g = root / "deploy/grafana"
d = json.load(open(g / "dashboards/duo-workers.json"))
ds = yaml.safe_load(open(g / "provisioning/datasources/prometheus.yml"))["datasources"][0]
prov = yaml.safe_load(open(g / "provisioning/dashboards/duo.yml"))["providers"][0]
assert prov["options"]["path"] == "/var/lib/grafana/dashboards", prov
exprs = []
for p in d["panels"]:
    assert p["datasource"]["uid"] == ds["uid"], p["title"]
    for t in p["targets"]:
        assert t["datasource"]["uid"] == ds["uid"], p["title"]
        exprs.append(t["expr"])
titles = " ".join(p["title"].lower() for p in d["panels"])
for want in ("jobs per second", "latency", "in-flight", "held pushes", "import progress", "dead letters", "circuit breakers"):
    assert want in titles, "no panel for " + want
rules = yaml.safe_load(open(root / "deploy/prometheus/alerts.yml"))
exprs += [r["expr"] for grp in rules["groups"] for r in grp["rules"]]
described = set()
for src in list(root.glob("common/*/*.c")) + list(root.glob("workers/*/*.c")):
    text = src.read_text()
    described |= set(re.findall(r'metrics?_describe\(\s*[\w>-]+,\s*"(duo_[a-z_]+)"', text))
    described |= set(re.findall(r'# TYPE (duo_[a-z_]+)', text))
used = set()
for e in exprs:
    for m in re.findall(r'\b(duo_[a-z_]+?)(?:_bucket|_sum|_count)?\b(?=[{\[)\s]|$)', e):
        used.add(m)
missing = sorted(u for u in used if u not in described)
assert not missing, "queried but never exported: %s" % missing
PY

if grep -q "rabbitmq_prometheus" "$ROOT/deploy/rabbitmq/enabled_plugins"; then
  ok "rabbitmq enables its prometheus plugin"
else
  bad "rabbitmq enables its prometheus plugin"
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]

#!/usr/bin/env bash
# test_bad_config.sh - bad configuration stops every program with one line on stderr
# that names the variable, and a non-zero exit; nothing starts half-configured.
set -u
BIN="${DUO_BIN_DIR:?}"
pass=0; fail=0
check() { # name, expected text, command...
  local name="$1" want="$2"; shift 2
  local err rc
  err="$(env -i PATH="$PATH" "$@" 2>&1 >/dev/null)"; rc=$?
  local lines; lines="$(printf '%s\n' "$err" | grep -c .)"
  if [ "$rc" -ne 0 ] && [ "$lines" -eq 1 ] && printf '%s' "$err" | grep -qF -- "$want"; then
    pass=$((pass + 1))
  else
    echo "FAIL $name: rc=$rc lines=$lines stderr: $err"; fail=$((fail + 1))
  fi
}
DB=DATABASE_URL=postgresql://nobody@127.0.0.1:1/none
MQ=AMQP_URL=amqp://guest:guest@127.0.0.1:1/
for w in enroll auth import; do
  check "$w without DATABASE_URL" DATABASE_URL "$BIN/duo-$w"
  check "$w with a redis AMQP_URL" AMQP_URL env "$DB" AMQP_URL=redis://x "$BIN/duo-$w"
  check "$w with a bad prefetch" WORKER_PREFETCH env "$DB" "$MQ" WORKER_PREFETCH=lots "$BIN/duo-$w"
  check "$w with prefetch out of range" "out of range" env "$DB" "$MQ" WORKER_PREFETCH=0 "$BIN/duo-$w"
  check "$w without a key" DUO_SECRET_KEY env "$DB" "$MQ" "$BIN/duo-$w"
  check "$w with a short key" DUO_SECRET_KEY env "$DB" "$MQ" DUO_SECRET_KEY=c2hvcnQ= "$BIN/duo-$w"
  check "$w with bad retry delays" RETRY_DELAYS_MS env "$DB" "$MQ" RETRY_DELAYS_MS=5,x \
    DUO_SECRET_KEY="$(head -c 32 /dev/zero | base64)" "$BIN/duo-$w"
  check "$w with a bad METRICS_ADDR" METRICS_ADDR env "$DB" "$MQ" METRICS_ADDR=everywhere "$BIN/duo-$w"
done
# A metrics port held by another program: one line naming the setting and the address;
# a world-readable key file: refused as ssh refuses such keys.
KEY="$(head -c 32 /dev/zero | base64)"
python3 -c 'import socket,time; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(120)' >/tmp/duo-badcfg.$$ &
holder=$!
for _ in $(seq 1 50); do [ -s /tmp/duo-badcfg.$$ ] && break; sleep 0.1; done
held="$(cat /tmp/duo-badcfg.$$)"
check "metrics port taken" "METRICS_PORT: cannot listen on 127.0.0.1:$held" env "$DB" "$MQ" \
  DUO_SECRET_KEY="$KEY" METRICS_PORT="$held" "$BIN/duo-enroll"
kill "$holder"; rm -f /tmp/duo-badcfg.$$
keyfile="$(mktemp)"; echo "$KEY" >"$keyfile"; chmod 644 "$keyfile"
check "world-readable key file" "mode 0644 lets other users read the key" env "$DB" "$MQ" \
  DUO_SECRET_KEY_FILE="$keyfile" "$BIN/duo-auth"
rm -f "$keyfile"
check "duoctl migrate without DATABASE_URL" DATABASE_URL "$BIN/duoctl" migrate
check "duoctl with a bad LOG_LEVEL" LOG_LEVEL env LOG_LEVEL=loud "$DB" "$BIN/duoctl" migrate
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

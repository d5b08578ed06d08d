#!/usr/bin/env bash
# perf_stages.sh - splits a `perf record --call-graph dwarf` profile of duo-auth into the
# stages of an authentication job: each sample goes to the innermost project function
# on its call chain that names a stage (so a libpq send under store_job_claim counts
# as "claim", and curl work under a Duo callback's SQL counts as that SQL). Prints each
# stage's share of the samples and, given the jobs the profile covered and the worker's
# CPU per job measured without the profiler, its microseconds of CPU per job; and which
# part of each stage's samples were in the kernel (system calls, loopback TCP) and in
# OpenSSL (TLS to PostgreSQL and Duo, HMAC signing).
#   bench/perf_stages.sh PERF_DATA [JOBS [CPU_MS_PER_JOB]]
# See bench/README.md, "Where a fast-path job's time goes".
set -euo pipefail
DATA=${1:?usage: perf_stages.sh PERF_DATA [JOBS [CPU_MS_PER_JOB]]}
JOBS=${2:-0}
CPU_MS=${3:-0}

perf script -i "$DATA" -F ip,sym,dso 2>/dev/null | awk -v jobs="$JOBS" -v cpu_ms="$CPU_MS" '
BEGIN {
  # stage <- project functions (innermost match wins). Order = order of a job.
  n = split("mq_poll pump_once mq_service mq_pump start_delivery=receive deliveries and confirms (AMQP frames)|" \
            "msg_decode=decode (msgpack to JSON)|" \
            "schema_validate schema_get=validate (JSON schema)|" \
            "store_job_claim store_job_claim_ahead=claim (sent ahead with the batch)|" \
            "store_auth_device_for_user store_auth_device_by_uuid store_auth_device_ahead=device and stage row (sent ahead with the claim)|" \
            "stages_get stages_duo_opts=stage cache, Duo options|" \
            "duo_request_build=Duo request build and sign|" \
            "start_attempt duo_async_submit=curl: start the call (easy handle, connection reuse)|" \
            "drive on_socket on_timer=curl: HTTPS I/O (TLS, HTTP)|" \
            "duo_response_parse duo_json_body duo_body_on_data duo_body_on_header=Duo answer parse|" \
            "finished auth_outcome on_duo finish worker_job_done finish_job commit_and_reply commit_later=job completion (outcome, hand-off to the runtime)|" \
            "store_auth_record=decision record (queued)|" \
            "store_job_finish store_job_finish_later store_commit_later=job record and its Sync (queued)|" \
            "collect_commits store_flush store_take_committed=PostgreSQL round trip of the turn (claims, reads, commits)|" \
            "reply_build msg_encode=reply build and encode|" \
            "mq_reply=reply publish|" \
            "mq_confirmed confirm=confirm bookkeeping|" \
            "mq_settle=ack|" \
            "metrics_add metrics_job metrics_observe metrics_held metrics_set metrics_inflight worker_health stage_observe log_write log_emit=metrics, health, logging|" \
            "duo_async_poll auth_poll=event loop wait (poll)|" \
            "worker_main=runtime loop (settle list walk, dispatch)", rows, "|")
  for (i = 1; i <= n; i++) {
    split(rows[i], kv, "=")
    order[i] = kv[2]
    m = split(kv[1], fns, " ")
    for (k = 1; k <= m; k++) stage_of[fns[k]] = kv[2]
  }
}
/^[^ \t]/ { next }                     # sample header (not printed with -F ip,sym)
/^[ \t]*$/ { if (insample) finish(); next }
{
  if (!insample) { leafdso = $NF; insample = 1 }
  if (got == "") { sym = $2; if (sym in stage_of) got = stage_of[sym] }
}
function finish() {
  total++
  st = got == "" ? "other (outside the job path)" : got
  cnt[st]++
  if (leafdso ~ /kernel/) kern[st]++
  else if (leafdso ~ /libssl|libcrypto/) tls[st]++
  got = ""; insample = 0
}
END {
  if (insample) finish()
  printf "%-58s %8s %10s %8s %8s\n", "stage", "% CPU", "us/job", "kernel", "OpenSSL"
  order[n + 1] = "other (outside the job path)"
  for (i = 1; i <= n + 1; i++) {
    s = order[i]; p = 100.0 * cnt[s] / total
    us = cpu_ms > 0 ? p / 100.0 * cpu_ms * 1000.0 : 0
    printf "%-58s %7.1f%% %10.1f %7.0f%% %7.0f%%\n", s, p, us, \
           cnt[s] ? 100.0 * kern[s] / cnt[s] : 0, cnt[s] ? 100.0 * tls[s] / cnt[s] : 0
  }
  printf "%-58s %7d samples%s\n", "total", total, (jobs > 0 ? sprintf(", %d jobs", jobs) : "")
}'

/* test_duo_async.c - the asynchronous Duo engine against the emulator: many held
 * requests in flight at once, retries of 429/5xx without blocking, no retry of a 4xx,
 * per-request deadlines, cancellation, and the extra descriptor waking the wait.
 * Each test makes its own emulator account, so it runs beside anything else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "clock.h"
#include "duo_async.h"
#include "testlib.h"
#include "tl_stack.h"

typedef struct {
    char account[48];
    char ikey[128];
    char skey[128];
} emu_account;

/* What one callback saw. */
typedef struct {
    int done;
    int rc;
    char result[32];
    duo_error err;
} outcome;

/* Calls the emulator's control API with a JSON body (stolen; NULL for a GET). */
static json_t *emu(const char *path, json_t *body)
{
    char *req = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    json_t *j = tl_emu_json(path, req);
    free(req);
    return j;
}

static void new_account(emu_account *a)
{
    static unsigned seq;
    snprintf(a->account, sizeof a->account, "da%ld%u%ld", (long)getpid(), seq++,
             (long)time(NULL) % 100000);
    snprintf(a->ikey, sizeof a->ikey, "DIA%s", a->account);
    snprintf(a->skey, sizeof a->skey, "sk-%s-secret", a->account);
    json_decref(emu("/_emu/account", json_pack("{s:s, s:[{s:s, s:s, s:s}], s:b}", "account",
                                               a->account, "integrations", "ikey", a->ikey, "skey",
                                               a->skey, "type", "auth", "admin_licensed", 1)));
    json_decref(emu("/_emu/users", json_pack("{s:s, s:[{s:s}]}", "account", a->account, "users",
                                             "username", "alice")));
}

static void behave(const emu_account *a, const char *push, int delay_ms)
{
    json_decref(emu("/_emu/behavior", json_pack("{s:s, s:s, s:s, s:i}", "account", a->account,
                                                "user", "*", "push", push, "delay_ms", delay_ms)));
}

static void fault(const emu_account *a, const char *path, int status, int count)
{
    json_decref(
        emu("/_emu/faults", json_pack("{s:s, s:s, s:i, s:i}", "account", a->account, "path_prefix",
                                      path, "status", status, "count", count)));
}

static void opts_for(const emu_account *a, duo_client_opts *o)
{
    duo_client_opts_default(o);
    o->host = tl_env("DUO_EMU_HOST");
    o->ikey = a->ikey;
    o->skey = a->skey;
    o->ca_file = tl_env("DUO_CA_FILE");
    o->backoff_base_ms = 10;
    o->retry_attempts = 4;
    o->timeout_ms = 30000;
}

static void on_done(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *err)
{
    (void)meta;
    outcome *o = arg;
    o->done++;
    o->rc = rc;
    o->err = *err;
    const char *r = json_string_value(json_object_get(resp, "result"));
    if (!r)
        r = json_is_integer(json_object_get(resp, "time")) ? "time" : "";
    snprintf(o->result, sizeof o->result, "%s", r);
}

/* Polls until n callbacks ran (or a generous safety limit of polls is reached). */
static void run_until(duo_async *a, const int *done, int n)
{
    for (int i = 0; i < 20000 && *done < n; i++)
        assert_true(duo_async_poll(a, -1, 100, NULL) >= 0);
}

static duo_async *engine(void)
{
    err_t e = {0};
    duo_async *a = duo_async_new(NULL, &e);
    if (!a)
        fail_msg("duo_async_new: %s", e.msg);
    return a;
}

static void submit_auth(duo_async *a, const duo_client_opts *o, long long deadline, outcome *out)
{
    duo_param p[] = {{"username", "alice"}, {"factor", "push"}, {"device", "auto"}};
    err_t e = {0};
    assert_int_equal(
        duo_async_submit(a, o, "POST", "/auth/v2/auth", p, 3, deadline, on_done, out, NULL, &e), 0);
}

/* 300 pushes held 1 s each are all in flight together and all come back allow. */
static void test_many_held_pushes(void **state)
{
    (void)state;
    enum { N = 300 };
    emu_account acc;
    new_account(&acc);
    behave(&acc, "allow", 1000);
    duo_client_opts o;
    opts_for(&acc, &o);
    duo_async *a = engine();
    static outcome outs[N];
    memset(outs, 0, sizeof outs);
    for (int i = 0; i < N; i++)
        submit_auth(a, &o, 0, &outs[i]);
    assert_int_equal(duo_async_active(a), N);
    size_t peak = 0;
    int finished = 0;
    for (int i = 0; i < 20000 && finished < N; i++) {
        int ran = duo_async_poll(a, -1, 100, NULL);
        assert_true(ran >= 0);
        finished += ran;
        if (duo_async_running(a) > peak)
            peak = duo_async_running(a);
    }
    assert_int_equal(finished, N);
    assert_int_equal(duo_async_active(a), 0);
    assert_int_equal(peak, N); /* all were on the wire at once */
    for (int i = 0; i < N; i++) {
        assert_int_equal(outs[i].done, 1);
        if (outs[i].rc != 0)
            fail_msg("push %d: %s (%s)", i, outs[i].err.message, outs[i].err.detail);
        assert_string_equal(outs[i].result, "allow");
    }
    duo_async_free(a);
}

/* Two 429s then success: three attempts, one callback; nothing blocked meanwhile. */
static void test_retry_429(void **state)
{
    (void)state;
    emu_account acc;
    new_account(&acc);
    fault(&acc, "/auth/v2/check", 429, 2);
    duo_client_opts o;
    opts_for(&acc, &o);
    duo_async *a = engine();
    outcome out = {0};
    err_t e = {0};
    assert_int_equal(
        duo_async_submit(a, &o, "GET", "/auth/v2/check", NULL, 0, 0, on_done, &out, NULL, &e), 0);
    run_until(a, &out.done, 1);
    assert_int_equal(out.done, 1);
    assert_int_equal(out.rc, 0);
    assert_string_equal(out.result, "time");
    assert_int_equal(out.err.attempts, 3);
    assert_int_equal(duo_async_attempts(a), 3);
    duo_async_free(a);
}

/* 503 on every attempt: gives up after retry_attempts with a transient error. */
static void test_5xx_exhausted(void **state)
{
    (void)state;
    emu_account acc;
    new_account(&acc);
    fault(&acc, "/auth/v2/check", 503, 10);
    duo_client_opts o;
    opts_for(&acc, &o);
    duo_async *a = engine();
    outcome out = {0};
    assert_int_equal(
        duo_async_submit(a, &o, "GET", "/auth/v2/check", NULL, 0, 0, on_done, &out, NULL, NULL), 0);
    run_until(a, &out.done, 1);
    assert_int_equal(out.rc, ERR_DUO);
    assert_int_equal(out.err.cls, DUO_CLASS_TRANSIENT);
    assert_int_equal(out.err.http_status, 503);
    assert_int_equal(out.err.attempts, 4);
    assert_string_equal(duo_error_code(&out.err), "duo_unavailable");
    duo_async_free(a);
}

/* A removed user is a 400 40002: answered once, never retried. */
static void test_4xx_not_retried(void **state)
{
    (void)state;
    emu_account acc;
    new_account(&acc);
    json_decref(emu("/_emu/users/remove",
                    json_pack("{s:s, s:s}", "account", acc.account, "username", "alice")));
    duo_client_opts o;
    opts_for(&acc, &o);
    duo_async *a = engine();
    outcome out = {0};
    submit_auth(a, &o, 0, &out);
    run_until(a, &out.done, 1);
    assert_int_equal(out.rc, ERR_DUO);
    assert_int_equal(out.err.http_status, 400);
    assert_int_equal(out.err.code, 40002);
    assert_int_equal(out.err.attempts, 1);
    assert_int_equal(duo_async_attempts(a), 1);
    duo_async_free(a);
}

/* The receive buffer is sized to Duo's small answers (1 KiB); a far larger answer
 * still arrives whole, and one past max_response_bytes is refused. */
/* GET /auth/v2/check on a, polled until it answered. */
static void check_once(duo_async *a, const duo_client_opts *o, outcome *out)
{
    err_t e = {0};
    assert_int_equal(
        duo_async_submit(a, o, "GET", "/auth/v2/check", NULL, 0, 0, on_done, out, NULL, &e), 0);
    run_until(a, &out->done, 1);
}

static void test_large_answer(void **state)
{
    (void)state;
    emu_account acc;
    new_account(&acc);
    enum { PAD = 200000 };
    char *pad = malloc(PAD + 1);
    assert_non_null(pad);
    memset(pad, 'x', PAD);
    pad[PAD] = '\0';
    json_t *body =
        json_pack("{s:s, s:{s:i, s:s}}", "stat", "OK", "response", "time", 1700000000, "pad", pad);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    json_decref(emu("/_emu/faults",
                    json_pack("{s:s, s:s, s:i, s:i, s:s}", "account", acc.account, "path_prefix",
                              "/auth/v2/check", "status", 200, "count", 2, "body", text)));
    duo_client_opts o;
    opts_for(&acc, &o);
    duo_async *a = engine();
    outcome whole = {0}, cut = {0};
    check_once(a, &o, &whole);
    assert_int_equal(whole.rc, 0);
    assert_string_equal(whole.result, "time");
    o.max_response_bytes = PAD / 2;
    check_once(a, &o, &cut);
    assert_int_equal(cut.rc, ERR_DUO);
    assert_string_equal(duo_error_code(&cut.err), "duo_bad_response");
    duo_async_free(a);
    free(text);
    free(pad);
}

/* A push the emulator holds forever ends at its deadline as a timeout. */
static void test_deadline(void **state)
{
    (void)state;
    emu_account acc;
    new_account(&acc);
    behave(&acc, "hang", 0);
    duo_client_opts o;
    opts_for(&acc, &o);
    duo_async *a = engine();
    outcome out = {0};
    submit_auth(a, &o, clock_ms() + 1500, &out);
    run_until(a, &out.done, 1);
    assert_int_equal(out.done, 1);
    assert_int_equal(out.rc, ERR_TIMEOUT);
    assert_int_equal(out.err.fail, DUO_FAIL_TIMEOUT);
    assert_int_equal(out.err.attempts, 1); /* a timed-out push is never sent twice */
    duo_async_free(a);
}

/* A cancelled request never calls back; the others still complete. */
static void test_cancel(void **state)
{
    (void)state;
    emu_account acc;
    new_account(&acc);
    behave(&acc, "allow", 300);
    duo_client_opts o;
    opts_for(&acc, &o);
    duo_async *a = engine();
    outcome keep = {0}, drop = {0};
    duo_param p[] = {{"username", "alice"}, {"factor", "push"}};
    duo_areq *r = NULL;
    assert_int_equal(
        duo_async_submit(a, &o, "POST", "/auth/v2/auth", p, 2, 0, on_done, &drop, &r, NULL), 0);
    submit_auth(a, &o, 0, &keep);
    assert_int_equal(duo_async_poll(a, -1, 0, NULL), 0); /* both on the wire */
    duo_async_cancel(a, r);
    assert_int_equal(duo_async_active(a), 1);
    run_until(a, &keep.done, 1);
    assert_int_equal(keep.done, 1);
    assert_string_equal(keep.result, "allow");
    assert_int_equal(drop.done, 0);
    duo_async_free(a);
}

/* The extra descriptor wakes the wait while a request is held. */
static void test_extra_fd(void **state)
{
    (void)state;
    emu_account acc;
    new_account(&acc);
    behave(&acc, "allow", 3000);
    duo_client_opts o;
    opts_for(&acc, &o);
    duo_async *a = engine();
    outcome out = {0};
    submit_auth(a, &o, 0, &out);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    int ready = 0;
    for (int i = 0; i < 50 && !ready; i++)
        duo_async_poll(a, fds[0], 10000, &ready);
    assert_int_equal(ready, 1);
    assert_int_equal(out.done, 0); /* woke for the pipe, not for the held push */
    duo_async_free(a);             /* frees the held request without a callback */
    assert_int_equal(out.done, 0);
    close(fds[0]);
    close(fds[1]);
}

/* Bad arguments are refused at once, with no callback. */
static void test_bad_args(void **state)
{
    (void)state;
    duo_async *a = engine();
    duo_client_opts o;
    duo_client_opts_default(&o);
    outcome out = {0};
    err_t e = {0};
    assert_int_equal(
        duo_async_submit(a, &o, "GET", "/auth/v2/check", NULL, 0, 0, on_done, &out, NULL, &e),
        ERR_INVAL);
    assert_int_equal(duo_async_active(a), 0);
    assert_int_equal(duo_async_poll(a, -1, 0, NULL), 0);
    assert_int_equal(out.done, 0);
    duo_async_free(a);
}

static long long answered(const emu_account *acc, const char *path)
{
    return tl_emu_requests(acc->account, path);
}

static void on_change(void *arg, const char *host, duo_breaker_state to, long long open_ms)
{
    (void)host;
    (void)open_ms;
    ((int *)arg)[to]++;
}

static outcome checked(duo_async *a, const duo_client_opts *o)
{
    outcome out = {0};
    assert_int_equal(
        duo_async_submit(a, o, "GET", "/auth/v2/check", NULL, 0, 0, on_done, &out, NULL, NULL), 0);
    run_until(a, &out.done, 1);
    return out;
}

/* Three 503s in a row open the host's breaker: the next call is refused unsent, at once;
 * once the open time passed, the engine's own probe goes out and its success closes the
 * breaker. */
static void test_breaker_opens_refuses_and_probes(void **state)
{
    (void)state;
    emu_account acc;
    new_account(&acc);
    fault(&acc, "/auth/v2/check", 503, 3);
    duo_client_opts o;
    opts_for(&acc, &o);
    o.retry_attempts = 1;
    int changes[3] = {0};
    duo_async_opts ao = {.breaker = {.failures = 3, .open_ms = 600, .max_open_ms = 1200},
                         .on_breaker = on_change,
                         .breaker_arg = changes};
    err_t e = {0};
    duo_async *a = duo_async_new(&ao, &e);
    assert_non_null(a);
    for (int i = 0; i < 3; i++)
        assert_int_equal(checked(a, &o).err.http_status, 503);
    assert_int_equal(changes[DUO_BREAKER_OPEN], 1);
    assert_int_equal(duo_async_breaker_state(a, o.host), DUO_BREAKER_OPEN);
    long long sent = answered(&acc, "/auth/v2/check");
    outcome refused = checked(a, &o);
    assert_int_equal(refused.err.fail, DUO_FAIL_CIRCUIT_OPEN);
    assert_int_equal(refused.err.cls, DUO_CLASS_TRANSIENT);
    assert_true(refused.err.not_sent);
    assert_true(refused.err.retry_in_ms > 0 && refused.err.retry_in_ms <= 600);
    assert_string_equal(duo_error_code(&refused.err), "duo_circuit_open");
    assert_int_equal(answered(&acc, "/auth/v2/check"), sent); /* nothing reached Duo */
    usleep(700 * 1000);
    /* Half-open: the engine probes the host itself (GET /auth/v2/ping); the call that
     * found it due is refused at once like the others, and no job waits on the probe. */
    outcome during = checked(a, &o);
    assert_int_equal(during.err.fail, DUO_FAIL_CIRCUIT_OPEN);
    assert_int_equal(changes[DUO_BREAKER_HALF_OPEN], 1);
    for (int i = 0; i < 100 && duo_async_breaker_state(a, o.host) != DUO_BREAKER_CLOSED; i++)
        assert_true(duo_async_poll(a, -1, 50, NULL) >= 0);
    assert_int_equal(changes[DUO_BREAKER_CLOSED], 1);
    assert_int_equal(duo_async_breaker_state(a, o.host), DUO_BREAKER_CLOSED);
    assert_int_equal(checked(a, &o).rc, 0);
    duo_async_free(a);
}

/* A group of limit 2: two calls on the wire, one waiting for a slot (it gets one when a
 * call ends), and a fourth beyond the queue refused at once as stage busy. A slot is
 * taken when a call is due, so calls deferred to later hold none. */
static void test_bulkhead_bounds_a_group(void **state)
{
    (void)state;
    emu_account acc;
    new_account(&acc);
    behave(&acc, "allow", 800);
    duo_client_opts o;
    opts_for(&acc, &o);
    o.group = "stage-a";
    o.group_limit = 2;
    o.group_queue_max = 1;
    o.group_queue_ms = 5000;
    duo_async *a = engine();
    outcome outs[4], later = {0};
    memset(outs, 0, sizeof outs);
    for (int i = 0; i < 4; i++)
        submit_auth(a, &o, 0, &outs[i]);
    duo_areq *r = NULL;
    duo_param p[] = {{"username", "alice"}, {"factor", "push"}, {"device", "auto"}};
    assert_int_equal(
        duo_async_submit(a, &o, "POST", "/auth/v2/auth", p, 3, 0, on_done, &later, &r, NULL), 0);
    duo_async_defer(r, clock_ms() + 60000);
    /* Another group is not held back by this one. */
    duo_client_opts other = o;
    other.group = "stage-b";
    outcome b = {0};
    submit_auth(a, &other, 0, &b);
    assert_true(duo_async_poll(a, -1, 0, NULL) >= 0);
    int inflight = 0, queued = 0;
    duo_async_group_load(a, "stage-a", &inflight, &queued);
    assert_int_equal(inflight, 2);
    assert_int_equal(queued, 1);
    int busy = -1;
    for (int i = 0; i < 4; i++)
        if (outs[i].done)
            busy = i;
    assert_true(busy >= 0); /* refused in the first poll, without waiting for a slot */
    assert_int_equal(outs[busy].err.fail, DUO_FAIL_STAGE_BUSY);
    assert_true(outs[busy].err.not_sent);
    int all = 0;
    for (int i = 0; i < 20000 && all < 4; i++) {
        assert_true(duo_async_poll(a, -1, 100, NULL) >= 0);
        all = b.done;
        for (int k = 0; k < 4; k++)
            all += k != busy && outs[k].done;
    }
    for (int i = 0; i < 4; i++)
        if (i != busy)
            assert_string_equal(outs[i].result, "allow");
    assert_string_equal(b.result, "allow");
    assert_int_equal(later.done, 0);
    duo_async_group_load(a, "stage-a", &inflight, &queued);
    assert_int_equal(inflight + queued, 0); /* the deferred call holds no slot */
    duo_async_cancel(a, r);
    duo_async_free(a);
}

/* A group no wider than the engine's connections per host: with one connection and a
 * group limit of 8, three calls that take 0.6 s each and time out after 1 s all succeed,
 * one at a time (a transfer waiting inside libcurl for the connection would have its
 * timeout running: the second and third timed out so). */
static void test_group_fits_the_connections(void **state)
{
    (void)state;
    emu_account acc;
    new_account(&acc);
    json_decref(
        emu("/_emu/faults", json_pack("{s:s, s:s, s:i, s:i}", "account", acc.account, "path_prefix",
                                      "/auth/v2/preauth", "latency_ms", 600, "count", 3)));
    duo_client_opts o;
    opts_for(&acc, &o);
    o.retry_attempts = 1;
    o.quick_timeout_ms = 1000;
    o.group = "stage-c";
    o.group_limit = 8;
    o.group_queue_max = 8;
    o.group_queue_ms = 10000;
    duo_async_opts ao = {.max_host_connections = 1};
    err_t e = {0};
    duo_async *a = duo_async_new(&ao, &e);
    assert_non_null(a);
    outcome outs[3];
    memset(outs, 0, sizeof outs);
    duo_param p[] = {{"username", "alice"}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(duo_async_submit(a, &o, "POST", "/auth/v2/preauth", p, 1, 0, on_done,
                                          &outs[i], NULL, NULL),
                         0);
    assert_true(duo_async_poll(a, -1, 0, NULL) >= 0);
    int inflight = 0, queued = 0;
    duo_async_group_load(a, "stage-c", &inflight, &queued);
    assert_int_equal(inflight, 1);
    assert_int_equal(queued, 2);
    int done = 0;
    for (int i = 0; i < 20000 && done < 3; i++) {
        assert_true(duo_async_poll(a, -1, 100, NULL) >= 0);
        done = outs[0].done + outs[1].done + outs[2].done;
    }
    for (int i = 0; i < 3; i++) {
        assert_int_not_equal(outs[i].err.fail, DUO_FAIL_TIMEOUT);
        assert_int_equal(outs[i].rc, 0);
    }
    duo_async_free(a);
}

/* A call Duo answers at once times out after quick_timeout_ms; a long poll (a
 * synchronous push) waits its own timeout_ms. */
static void test_quick_and_long_timeouts(void **state)
{
    (void)state;
    emu_account acc;
    new_account(&acc);
    behave(&acc, "allow", 1500);
    duo_client_opts o;
    opts_for(&acc, &o);
    o.retry_attempts = 1;
    o.quick_timeout_ms = 500;
    o.timeout_ms = 5000;
    duo_async *a = engine();
    outcome push = {0}, pre = {0};
    submit_auth(a, &o, 0, &push); /* push without async=1: a long poll */
    json_decref(
        emu("/_emu/faults", json_pack("{s:s, s:s, s:i, s:i}", "account", acc.account, "path_prefix",
                                      "/auth/v2/preauth", "latency_ms", 1500, "count", 1)));
    duo_param p[] = {{"username", "alice"}};
    assert_int_equal(
        duo_async_submit(a, &o, "POST", "/auth/v2/preauth", p, 1, 0, on_done, &pre, NULL, NULL), 0);
    run_until(a, &pre.done, 1);
    assert_int_equal(pre.err.fail, DUO_FAIL_TIMEOUT);
    run_until(a, &push.done, 1);
    assert_int_equal(push.rc, 0);
    assert_string_equal(push.result, "allow");
    duo_async_free(a);
}

int main(void)
{
    tl_env("DUO_EMU_URL");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_held_pushes),
        cmocka_unit_test(test_retry_429),
        cmocka_unit_test(test_5xx_exhausted),
        cmocka_unit_test(test_4xx_not_retried),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_extra_fd),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_large_answer),
        cmocka_unit_test(test_breaker_opens_refuses_and_probes),
        cmocka_unit_test(test_bulkhead_bounds_a_group),
        cmocka_unit_test(test_group_fits_the_connections),
        cmocka_unit_test(test_quick_and_long_timeouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

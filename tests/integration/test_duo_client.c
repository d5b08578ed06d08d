/* test_duo_client.c - the blocking Duo client against the emulator: every typed call,
 * duo_call with the parameter builders, every error class, retries counted through the
 * emulator's stats, the retry budget, signature versions, TLS, the idle hook.
 * Each test creates its own emulator account with unique keys, so tests can run in
 * parallel with anything else using the emulator. */
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
#include "duo.h"
#include "testlib.h"
#include "tl_stack.h"

typedef struct {
    char account[48];
    char auth_ikey[128], admin_ikey[128];
    char skey[128];
} emu_account;

static json_t *emu(const char *path, const char *body)
{
    return tl_emu_json(path, body);
}

static void emu_post(const char *path, json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(emu(path, s));
    free(s);
    json_decref(body);
}

static void new_account(emu_account *a, int licensed)
{
    static unsigned seq;
    snprintf(a->account, sizeof a->account, "dc%ld%u%ld", (long)getpid(), seq++,
             (long)time(NULL) % 100000);
    snprintf(a->auth_ikey, sizeof a->auth_ikey, "DIA%s", a->account);
    snprintf(a->admin_ikey, sizeof a->admin_ikey, "DIM%s", a->account);
    snprintf(a->skey, sizeof a->skey, "sk-%s-secret", a->account);
    emu_post("/_emu/account",
             json_pack("{s:s, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}], s:b, s:i}", "account",
                       a->account, "integrations", "ikey", a->auth_ikey, "skey", a->skey, "type",
                       "auth", "ikey", a->admin_ikey, "skey", a->skey, "type", "admin",
                       "admin_licensed", licensed, "admin_pages_per_min", 0));
}

static duo_client *client(const emu_account *a, int admin, int sig, duo_digest d)
{
    duo_client_opts o;
    duo_client_opts_default(&o);
    o.host = tl_env("DUO_EMU_HOST");
    o.ikey = admin ? a->admin_ikey : a->auth_ikey;
    o.skey = a->skey;
    o.sig_version = sig;
    o.digest = d;
    o.ca_file = tl_env("DUO_CA_FILE");
    o.backoff_base_ms = 10;
    o.retry_attempts = 4;
    o.timeout_ms = 20000;
    err_t e = {0};
    duo_client *c = duo_client_new(&o, &e);
    if (!c)
        fail_msg("duo_client_new: %s", e.msg);
    return c;
}

/* How many requests to path got `status` in this account. */
static long long stat_count(const emu_account *a, const char *path, const char *status)
{
    char q[256];
    snprintf(q, sizeof q, "/_emu/stats?account=%s", a->account);
    json_t *s = emu(q, NULL);
    json_t *n = json_object_get(json_object_get(json_object_get(s, "requests"), path), status);
    long long v = json_integer_value(n);
    json_decref(s);
    return v;
}

static long long sig_count(const emu_account *a, const char *kind)
{
    char q[256];
    snprintf(q, sizeof q, "/_emu/stats?account=%s", a->account);
    json_t *s = emu(q, NULL);
    long long v = json_integer_value(json_object_get(json_object_get(s, "sig"), kind));
    json_decref(s);
    return v;
}

static void fault(const emu_account *a, const char *path, int status, int count, int retry_after,
                  const char *body)
{
    json_t *f = json_pack("{s:s, s:s, s:i, s:i}", "account", a->account, "path_prefix", path,
                          "status", status, "count", count);
    if (retry_after >= 0)
        json_object_set_new(f, "retry_after", json_integer(retry_after));
    if (body)
        json_object_set_new(f, "body", json_string(body));
    emu_post("/_emu/faults", f);
}

/* GET path answering {"time": n} (ping, check): Duo's clock into *t. */
static int time_call(duo_client *c, const char *path, long long *t, duo_error *e)
{
    json_t *resp = NULL;
    int rc = duo_call(c, "GET", path, NULL, 0, &resp, NULL, e);
    if (rc == 0 && !json_is_integer(json_object_get(resp, "time")))
        fail_msg("%s answered without a time", path);
    if (rc == 0)
        *t = json_integer_value(json_object_get(resp, "time"));
    json_decref(resp);
    return rc;
}

static int check(duo_client *c, long long *t, duo_error *e)
{
    return time_call(c, "/auth/v2/check", t, e);
}

/* POST /auth/v2/auth with the parameters the duo layer builds; *resp owned. */
static int auth(duo_client *c, const duo_auth_req *req, json_t **resp, duo_error *e)
{
    duo_param p[DUO_AUTH_MAX_PARAMS];
    int n = duo_auth_params(req, p);
    assert_true(n > 0);
    return duo_call(c, "POST", "/auth/v2/auth", p, (size_t)n, resp, NULL, e);
}

static duo_result result_in(json_t *resp)
{
    return duo_result_of(json_string_value(json_object_get(resp, "result")));
}

static void test_ping_check_and_signatures(void **state)
{
    (void)state;
    emu_account a;
    new_account(&a, 1);
    struct {
        int sig;
        duo_digest d;
        const char *kind;
    } v[] = {{5, DUO_DIGEST_SHA512, "v5"},
             {2, DUO_DIGEST_SHA512, "v2-sha512"},
             {2, DUO_DIGEST_SHA1, "v2-sha1"}};
    for (size_t i = 0; i < 3; i++) {
        duo_client *c = client(&a, 0, v[i].sig, v[i].d);
        duo_error e;
        long long t = 0;
        assert_int_equal(time_call(c, "/auth/v2/ping", &t, &e), 0);
        assert_true(t > 1000000000);
        t = 0;
        if (check(c, &t, &e) < 0)
            fail_msg("check %s: %s", v[i].kind, e.message);
        assert_true(t > 1000000000);
        duo_client_free(c);
        assert_int_equal(sig_count(&a, v[i].kind), 1);
    }
}

static void test_enroll_flow(void **state)
{
    (void)state;
    emu_account a;
    new_account(&a, 1);
    duo_client *c = client(&a, 0, 5, DUO_DIGEST_SHA512);
    duo_enroll_result r;
    duo_error e;
    assert_int_equal(duo_enroll(c, "alice ü&=+", 3600, &r, &e), 0);
    assert_string_equal(r.username, "alice ü&=+");
    assert_true(strncmp(r.activation_code, "duo://", 6) == 0);
    assert_true(strncmp(r.user_id, "DU", 2) == 0);
    assert_non_null(r.activation_barcode);
    assert_non_null(r.activation_url);
    assert_true(r.expiration > 0);
    duo_enroll_state st = 0;
    assert_int_equal(duo_enroll_status(c, r.user_id, r.activation_code, &st, &e), 0);
    assert_int_equal(st, DUO_ENROLL_WAITING);
    emu_post("/_emu/enrollment",
             json_pack("{s:s, s:s, s:s}", "account", a.account, "activation_code",
                       r.activation_code, "action", "complete"));
    assert_int_equal(duo_enroll_status(c, r.user_id, r.activation_code, &st, &e), 0);
    assert_int_equal(st, DUO_ENROLL_SUCCESS);
    /* A second enroll of the same name: 400, permanent, never retried. */
    duo_enroll_result r2;
    assert_int_equal(duo_enroll(c, "alice ü&=+", 0, &r2, &e), ERR_DUO);
    assert_int_equal(e.http_status, 400);
    assert_int_equal(e.code, 40002);
    assert_int_equal(e.cls, DUO_CLASS_PERMANENT);
    assert_int_equal(e.attempts, 1);
    assert_string_equal(duo_error_code(&e), "duo_invalid_request");
    assert_int_equal(stat_count(&a, "/auth/v2/enroll", "400"), 1);
    assert_null(r2.user_id);
    duo_enroll_result_free(&r);
    /* Expired activation: invalid. */
    assert_int_equal(duo_enroll(c, "bob", 0, &r, &e), 0);
    emu_post("/_emu/enrollment",
             json_pack("{s:s, s:s, s:s}", "account", a.account, "activation_code",
                       r.activation_code, "action", "expire"));
    assert_int_equal(duo_enroll_status(c, r.user_id, r.activation_code, &st, &e), 0);
    assert_int_equal(st, DUO_ENROLL_INVALID);
    duo_enroll_result_free(&r);
    duo_client_free(c);
}

static void add_user(const emu_account *a, const char *name)
{
    emu_post("/_emu/users",
             json_pack("{s:s, s:[{s:s}]}", "account", a->account, "users", "username", name));
}

static void behavior(const emu_account *a, const char *user, const char *push, int delay)
{
    emu_post("/_emu/behavior", json_pack("{s:s, s:s, s:s, s:i}", "account", a->account, "user",
                                         user, "push", push, "delay_ms", delay));
}

static void test_preauth_auth(void **state)
{
    (void)state;
    emu_account a;
    new_account(&a, 1);
    add_user(&a, "carol");
    duo_client *c = client(&a, 0, 2, DUO_DIGEST_SHA512);
    duo_auth_result r;
    duo_error e;
    assert_int_equal(duo_preauth(c, NULL, "carol", "203.0.113.7", &r, &e), 0);
    assert_string_equal(r.result_raw, "auth");
    assert_int_equal(r.result, DUO_RESULT_OTHER);
    duo_auth_result_free(&r);
    duo_auth_req req = {.username = "carol",
                        .ipaddr = "203.0.113.7",
                        .type = "Acme Login",
                        .display_username = "Carol",
                        .pushinfo = "Domain=x.test&App=Mail"};
    json_t *resp = NULL;
    assert_int_equal(auth(c, &req, &resp, &e), 0);
    assert_int_equal(result_in(resp), DUO_RESULT_ALLOW);
    json_decref(resp);
    behavior(&a, "*", "deny", 0);
    assert_int_equal(auth(c, &req, &resp, &e), 0);
    assert_int_equal(result_in(resp), DUO_RESULT_DENY);
    json_decref(resp);
    behavior(&a, "*", "allowish", 0); /* an unexpected result string is not success */
    assert_int_equal(auth(c, &req, &resp, &e), 0);
    assert_int_equal(result_in(resp), DUO_RESULT_OTHER);
    assert_string_equal(json_string_value(json_object_get(resp, "result")), "allowish");
    json_decref(resp);
    duo_auth_req pc = {.username = "carol", .factor = "passcode", .passcode = "000000"};
    assert_int_equal(auth(c, &pc, &resp, &e), 0);
    assert_int_equal(result_in(resp), DUO_RESULT_DENY);
    json_decref(resp);
    pc.passcode = "123456";
    assert_int_equal(auth(c, &pc, &resp, &e), 0);
    assert_int_equal(result_in(resp), DUO_RESULT_ALLOW);
    json_decref(resp);
    duo_client_free(c);
}

static void test_async_auth(void **state)
{
    (void)state;
    emu_account a;
    new_account(&a, 1);
    add_user(&a, "dave");
    duo_client *c = client(&a, 0, 5, DUO_DIGEST_SHA512);
    duo_error e;
    duo_auth_req req = {.username = "dave", .async = 1};
    json_t *r = NULL, *s = NULL;
    assert_int_equal(auth(c, &req, &r, &e), 0);
    duo_param p[] = {{"txid", json_string_value(json_object_get(r, "txid"))}};
    assert_non_null(p[0].value);
    assert_null(json_object_get(r, "result"));
    int done = 0;
    for (int i = 0; i < 100 && !done; i++) {
        assert_int_equal(duo_call(c, "GET", "/auth/v2/auth_status", p, 1, &s, NULL, &e), 0);
        done = result_in(s) != DUO_RESULT_WAITING;
        if (done)
            assert_int_equal(result_in(s), DUO_RESULT_ALLOW);
        json_decref(s);
        if (!done)
            usleep(100000);
    }
    assert_true(done);
    json_decref(r);
    duo_client_free(c);
}

static void test_admin_calls(void **state)
{
    (void)state;
    emu_account a;
    new_account(&a, 1);
    emu_post("/_emu/users", json_pack("{s:s, s:{s:i, s:s, s:i}}", "account", a.account, "generate",
                                      "count", 650, "prefix", "gen", "start", 0));
    duo_client *c = client(&a, 1, 5, DUO_DIGEST_SHA512);
    duo_error e;
    long long seen = 0, offset = 0;
    json_t *summary = NULL;
    assert_int_equal(duo_call(c, "GET", "/admin/v1/info/summary", NULL, 0, &summary, NULL, &e), 0);
    assert_int_equal(json_integer_value(json_object_get(summary, "user_count")), 650);
    json_decref(summary);
    int pages = 0;
    while (offset >= 0 && pages < 10) {
        duo_users_page p;
        if (duo_admin_users_page(c, 300, offset, &p, &e) < 0)
            fail_msg("page at %lld: %s", offset, e.message);
        assert_int_equal(p.total_objects, 650);
        seen += (long long)json_array_size(p.users);
        offset = p.next_offset;
        pages++;
        duo_users_page_free(&p);
    }
    assert_int_equal(seen, 650);
    assert_int_equal(pages, 3);
    json_t *u = NULL;
    json_t *first = NULL;
    duo_users_page p;
    assert_int_equal(duo_admin_users_page(c, 1, 0, &p, &e), 0);
    first = json_array_get(p.users, 0);
    const char *name = json_string_value(json_object_get(first, "username"));
    assert_int_equal(duo_admin_user_by_username(c, name, &u, &e), 0);
    assert_string_equal(json_string_value(json_object_get(u, "username")), name);
    json_decref(u);
    /* By id: the same user; an id Duo does not have is 404 40401 -> ERR_NOTFOUND; an id
     * that could escape the path is refused before any request. */
    const char *uid = json_string_value(json_object_get(first, "user_id"));
    assert_int_equal(duo_admin_user_by_id(c, uid, &u, &e), 0);
    assert_string_equal(json_string_value(json_object_get(u, "username")), name);
    json_decref(u);
    assert_int_equal(duo_admin_user_by_id(c, "DUNOSUCHUSER00000000", &u, &e), ERR_NOTFOUND);
    assert_null(u);
    assert_int_equal(e.http_status, 404);
    assert_int_equal(e.code, 40401);
    assert_string_equal(duo_error_code(&e), "duo_user_not_found");
    assert_int_equal(duo_admin_user_by_id(c, "../users", &u, &e), ERR_INVAL);
    assert_int_equal(duo_admin_user_by_id(c, "", &u, &e), ERR_INVAL);
    duo_users_page_free(&p);
    assert_int_equal(duo_admin_user_by_username(c, "nobody-here", &u, &e), ERR_NOTFOUND);
    assert_null(u);
    assert_int_equal(duo_admin_users_page(c, 301, 0, &p, &e), ERR_INVAL);
    duo_client_free(c);
}

static void expect_class(int rc, int want_rc, const duo_error *e, int status, int code,
                         duo_error_class cls, const char *name)
{
    if (rc != want_rc || e->http_status != status || e->code != code || e->cls != cls ||
        strcmp(duo_error_code(e), name) != 0)
        fail_msg("got rc %d status %d code %d class %s (%s): %s", rc, e->http_status, e->code,
                 duo_error_class_name(e->cls), duo_error_code(e), e->message);
}

static void test_credential_errors(void **state)
{
    (void)state;
    emu_account a, bad;
    new_account(&a, 0);
    bad = a;
    snprintf(bad.skey, sizeof bad.skey, "not-the-secret");
    duo_client *c = client(&bad, 0, 5, DUO_DIGEST_SHA512);
    duo_error e;
    long long t;
    expect_class(check(c, &t, &e), ERR_DUO, &e, 401, 40103, DUO_CLASS_AUTH_CONFIG,
                 "duo_bad_signature");
    assert_non_null(strstr(e.message, "signature"));
    assert_int_equal(e.attempts, 1);
    duo_client_free(c);
    snprintf(bad.auth_ikey, sizeof bad.auth_ikey, "DINOSUCHKEY%s", a.account);
    c = client(&bad, 0, 2, DUO_DIGEST_SHA1);
    expect_class(check(c, &t, &e), ERR_DUO, &e, 401, 40102, DUO_CLASS_AUTH_CONFIG,
                 "duo_bad_integration_key");
    duo_client_free(c);
    c = client(&a, 1, 5, DUO_DIGEST_SHA512); /* admin, but the account is unlicensed */
    duo_users_page pg;
    expect_class(duo_admin_users_page(c, 10, 0, &pg, &e), ERR_DUO, &e, 403, 40301,
                 DUO_CLASS_LICENSE, "duo_forbidden");
    assert_int_equal(e.attempts, 1);
    duo_client_free(c);
}

static void test_retries(void **state)
{
    (void)state;
    emu_account a;
    new_account(&a, 1);
    duo_client *c = client(&a, 0, 5, DUO_DIGEST_SHA512); /* 4 attempts, 10 ms base */
    duo_error e;
    long long t;
    fault(&a, "/auth/v2/check", 429, 2, -1, NULL);
    assert_int_equal(check(c, &t, &e), 0);
    assert_int_equal(e.attempts, 3);
    assert_int_equal(stat_count(&a, "/auth/v2/check", "429"), 2);
    assert_int_equal(stat_count(&a, "/auth/v2/check", "200"), 1);
    fault(&a, "/auth/v2/check", 429, 4, -1, NULL); /* exactly the attempts */
    expect_class(check(c, &t, &e), ERR_DUO, &e, 429, 42901, DUO_CLASS_TRANSIENT,
                 "duo_rate_limited");
    assert_int_equal(e.attempts, 4);
    assert_int_equal(stat_count(&a, "/auth/v2/check", "429"), 6);
    fault(&a, "/auth/v2/check", 503, 1, -1, NULL);
    assert_int_equal(check(c, &t, &e), 0);
    assert_int_equal(e.attempts, 2);
    assert_int_equal(stat_count(&a, "/auth/v2/check", "503"), 1);
    duo_client_free(c);
}

static void test_retry_after(void **state)
{
    (void)state;
    emu_account a;
    new_account(&a, 1);
    duo_client_opts o;
    duo_client_opts_default(&o);
    o.host = tl_env("DUO_EMU_HOST"), o.ikey = a.auth_ikey, o.skey = a.skey;
    o.backoff_base_ms = 1, o.retry_attempts = 3, o.retry_budget_ms = 5000;
    duo_client *c = duo_client_new(&o, NULL); /* CA from $DUO_CA_FILE */
    assert_non_null(c);
    duo_error e;
    long long t, start = clock_ms();
    fault(&a, "/auth/v2/check", 429, 1, 1, NULL);
    assert_int_equal(check(c, &t, &e), 0);
    assert_int_equal(e.attempts, 2);
    assert_true(clock_ms() - start >= 900); /* waited Retry-After, not the 1 ms backoff */
    /* A Retry-After beyond the budget ends the call at once rather than sleeping. */
    fault(&a, "/auth/v2/check", 429, 1, 60, NULL);
    expect_class(check(c, &t, &e), ERR_DUO, &e, 429, 42901, DUO_CLASS_TRANSIENT,
                 "duo_rate_limited");
    assert_int_equal(e.attempts, 1);
    assert_int_equal(stat_count(&a, "/auth/v2/check", "429"), 2);
    duo_client_free(c);
}

static void test_bad_response_and_tls(void **state)
{
    (void)state;
    emu_account a;
    new_account(&a, 1);
    duo_client *c = client(&a, 0, 5, DUO_DIGEST_SHA512);
    duo_error e;
    long long t;
    fault(&a, "/auth/v2/check", 200, 1, -1, "this is not json");
    assert_int_equal(check(c, &t, &e), ERR_DUO);
    assert_string_equal(duo_error_code(&e), "duo_bad_response");
    duo_client_free(c);
    /* A typed call refuses an answer that lacks what it promises. */
    c = client(&a, 1, 5, DUO_DIGEST_SHA512);
    fault(&a, "/admin/v1/users", 200, 1, -1, "{\"stat\":\"OK\",\"response\":{}}");
    duo_users_page pg;
    assert_int_equal(duo_admin_users_page(c, 10, 0, &pg, &e), ERR_DUO);
    assert_non_null(strstr(e.message, "response array"));
    assert_string_equal(duo_error_code(&e), "duo_bad_response");
    duo_client_free(c);
    char other[512];
    snprintf(other, sizeof other, "%s/emu/other-ca.crt", tl_env("DUO_RUN_DIR"));
    duo_client_opts o;
    duo_client_opts_default(&o);
    o.host = tl_env("DUO_EMU_HOST"), o.ikey = a.auth_ikey, o.skey = a.skey, o.ca_file = other;
    c = duo_client_new(&o, NULL);
    assert_int_equal(check(c, &t, &e), ERR_TLS);
    assert_int_equal(e.cls, DUO_CLASS_TLS);
    assert_string_equal(duo_error_code(&e), "duo_tls");
    assert_non_null(strstr(e.message, "TLS"));
    assert_non_null(strstr(e.message, other));
    assert_int_equal(e.attempts, 1);
    duo_client_free(c);
}

typedef struct {
    int calls;
    int stop_after;
} idle_state;

static int on_idle(void *arg)
{
    idle_state *s = arg;
    s->calls++;
    return s->stop_after > 0 && s->calls >= s->stop_after;
}

static void test_idle_hook(void **state)
{
    (void)state;
    emu_account a;
    new_account(&a, 1);
    add_user(&a, "erin");
    behavior(&a, "*", "allow", 1200);
    idle_state is = {0, 0};
    duo_client_opts o;
    duo_client_opts_default(&o);
    o.host = tl_env("DUO_EMU_HOST"), o.ikey = a.auth_ikey, o.skey = a.skey;
    o.idle = on_idle, o.idle_arg = &is;
    duo_client *c = duo_client_new(&o, NULL);
    json_t *r = NULL;
    duo_error e;
    duo_auth_req req = {.username = "erin"};
    assert_int_equal(auth(c, &req, &r, &e), 0);
    assert_int_equal(result_in(r), DUO_RESULT_ALLOW);
    assert_true(is.calls >= 3); /* a 1.2 s wait polled every <= 200 ms */
    json_decref(r);
    is = (idle_state){0, 2};
    assert_int_equal(auth(c, &req, &r, &e), ERR_TIMEOUT);
    assert_null(r);
    assert_string_equal(duo_error_code(&e), "duo_cancelled");
    assert_int_equal(e.cls, DUO_CLASS_TRANSIENT);
    assert_non_null(strstr(e.message, "waiting for"));
    assert_int_equal(e.http_status, 0);
    /* Cancelled while waiting out a 5 s Retry-After: the refused attempt's status stays,
     * and the call ends long before the wait would have. */
    is = (idle_state){0, 2};
    fault(&a, "/auth/v2/check", 429, 1, 5, NULL);
    long long t, start = clock_ms();
    assert_int_equal(check(c, &t, &e), ERR_TIMEOUT);
    assert_true(clock_ms() - start < 2000);
    assert_string_equal(duo_error_code(&e), "duo_cancelled");
    assert_non_null(strstr(e.message, "backoff"));
    assert_int_equal(e.http_status, 429);
    assert_int_equal(e.code, 42901);
    assert_int_equal(e.attempts, 1);
    assert_int_equal(stat_count(&a, "/auth/v2/check", "429"), 1);
    /* The client works on after a cancel (the keep-alive engine survives it). */
    is = (idle_state){0, 0};
    assert_int_equal(check(c, &t, &e), 0);
    assert_int_equal(e.attempts, 1);
    duo_client_free(c);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ping_check_and_signatures),
        cmocka_unit_test(test_enroll_flow),
        cmocka_unit_test(test_preauth_auth),
        cmocka_unit_test(test_async_auth),
        cmocka_unit_test(test_admin_calls),
        cmocka_unit_test(test_credential_errors),
        cmocka_unit_test(test_retries),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_bad_response_and_tls),
        cmocka_unit_test(test_idle_hook),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}

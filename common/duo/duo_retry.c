/* duo_retry.c - see duo_retry.h. */
#include "duo_retry.h"

int duo_retry_allowed(int rc, const duo_error *e, int acts)
{
    int throttled = rc == ERR_DUO && e->fail == DUO_FAIL_HTTP && e->http_status == 429;
    if (acts) /* Duo may have acted on anything it received, even if it then failed */
        return throttled || (rc == ERR_NET && e->not_sent);
    if (rc == ERR_NET && e->fail == DUO_FAIL_NETWORK)
        return 1;
    return throttled || (rc == ERR_DUO && e->fail == DUO_FAIL_HTTP && e->http_status >= 500);
}

long long duo_backoff_ms(int n, long long base_ms, long retry_after_ms, unsigned jitter)
{
    if (retry_after_ms >= 0)
        return retry_after_ms;
    if (base_ms <= 0)
        return 0;
    int shift = n < 1 ? 0 : n - 1 < DUO_BACKOFF_MAX_SHIFT ? n - 1 : DUO_BACKOFF_MAX_SHIFT;
    return (base_ms << shift) + (long long)(jitter % ((unsigned long long)base_ms + 1));
}

long long duo_retry_wake(long long now_ms, long long wait_ms, long long deadline_ms,
                         long long start_by_ms)
{
    long long wake = now_ms + wait_ms;
    if (deadline_ms > 0 && wake >= deadline_ms)
        return -1;
    if (start_by_ms > 0 && wake > start_by_ms)
        return -1;
    return wake;
}

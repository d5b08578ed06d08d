/* duo_params.c - the one place the parameter lists of Duo's acting calls are built:
 * /auth/v2/auth (blocking tests and the auth worker's asynchronous calls alike),
 * /auth/v2/preauth, and pushinfo's encoding.
 *
 * Invariant: a parameter list only borrows the caller's strings (nothing is allocated
 * but pushinfo's encoding), and "device" is never sent with factor passcode (Duo would
 * refuse it). */
#include "duo.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"

int duo_preauth_params(const char *user_id, const char *username, const char *ipaddr,
                       duo_param p[2])
{
    if ((user_id && username) || (!user_id && !username))
        return ERR_INVAL;
    int n = 0;
    p[n++] = user_id ? (duo_param){"user_id", user_id} : (duo_param){"username", username};
    if (ipaddr)
        p[n++] = (duo_param){"ipaddr", ipaddr};
    return n;
}

int duo_auth_params(const duo_auth_req *req, duo_param p[DUO_AUTH_MAX_PARAMS])
{
    if (!req || (req->user_id && req->username) || (!req->user_id && !req->username))
        return ERR_INVAL;
    int n = 0;
    p[n++] = req->user_id ? (duo_param){"user_id", req->user_id}
                          : (duo_param){"username", req->username};
    const char *factor = req->factor ? req->factor : "auto";
    p[n++] = (duo_param){"factor", factor};
    if (strcmp(factor, "passcode") != 0)
        p[n++] = (duo_param){"device", req->device ? req->device : "auto"};
    const duo_param opt[] = {{"passcode", req->passcode},
                             {"ipaddr", req->ipaddr},
                             {"type", req->type},
                             {"display_username", req->display_username},
                             {"pushinfo", req->pushinfo}};
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++)
        if (opt[i].value)
            p[n++] = opt[i];
    if (req->async)
        p[n++] = (duo_param){"async", "1"};
    return n;
}

/* Appends "k=v", both percent-encoded, "&"-separated from what came before. */
static int put_pair(buf *b, const char *k, const char *v, err_t *e)
{
    char *ek = NULL, *ev = NULL;
    int rc = duo_percent_encode(k, strlen(k), &ek, e);
    if (rc == 0)
        rc = duo_percent_encode(v, strlen(v), &ev, e);
    if (rc == 0 && b->len)
        buf_put(b, "&", 1);
    if (rc == 0)
        buf_printf(b, "%s=%s", ek, ev);
    free(ek);
    free(ev);
    return rc;
}

int duo_pushinfo_encode(const json_t *obj, char **out, err_t *e)
{
    *out = NULL;
    buf b = {0};
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        const char *s = json_string_value(v);
        if (put_pair(&b, k, s ? s : "", e) < 0) {
            buf_free(&b);
            return ERR_NOMEM;
        }
    }
    if (!(*out = buf_release(&b, NULL)))
        return err_set(e, ERR_NOMEM, "out of memory encoding pushinfo");
    return 0;
}

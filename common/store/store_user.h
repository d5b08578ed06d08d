/* store_user.h - local users: the operator's upserts, lists and batch inserts (duoctl),
 * and the lookup by username that the enrollment and import workers make per job.
 *
 * Invariant: a username is 1..150 bytes and unique; input is checked before any query
 * and never becomes SQL text. Everything returned is owned by the caller's struct or
 * borrowed for one callback. Built only on store.h. */
#ifndef DUO_STORE_USER_H
#define DUO_STORE_USER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

/* A user as the workers need it; plain values in the caller's struct. */
typedef struct store_user {
    int64_t id;
    char uuid[40];
    int active;
} store_user;

/* Looks up a local user by username: 0, ERR_NOTFOUND, or ERR_DB. */
int store_user_by_name(store *s, const char *username, store_user *out, err_t *e);

/* A user as an operator sees it. Strings borrowed, valid during the callback only. */
typedef struct user_view {
    int64_t id;
    const char *uuid;
    const char *username;
    const char *email; /* NULL when unset */
    int active;
    const char *created_at; /* ISO 8601 UTC */
} user_view;

/* Called once per row; a negative return stops the walk and is returned. */
typedef int (*user_view_fn)(const user_view *v, void *arg);

/* Inserts or updates a user by username (email kept when email is NULL). *id and
 * *inserted (1 new, 0 existing) may be NULL. ERR_INVAL (username not 1..150 bytes),
 * ERR_DB. */
int store_user_upsert(store *s, const char *username, const char *email, int active, int64_t *id,
                      int *inserted, err_t *e);

/* Walks up to limit users by id (limit <= 0: all). */
int store_user_list(store *s, long limit, user_view_fn fn, void *arg, err_t *e);

/* Inserts n users in one statement (unnest of two arrays); existing usernames are left
 * alone. Both arrays are borrowed for the call; emails[i] may be NULL; emails itself may
 * be NULL. *inserted receives the rows added. ERR_INVAL (a username not 1..150 bytes),
 * ERR_NOMEM, ERR_DB. */
int store_user_insert_batch(store *s, const char *const *usernames, const char *const *emails,
                            size_t n, int64_t *inserted, err_t *e);

#endif

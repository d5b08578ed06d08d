/* store_device.h - Duo devices: the confirmed device the enrollment and import workers
 * add, and the operator's list and delete (duoctl device).
 *
 * Invariant: a stage has at most one device per Duo user (a unique index); a second add
 * is ERR_CONFLICT and changes nothing. Everything returned is copied into the caller's
 * buffers or borrowed for one callback. Built only on store.h. */
#ifndef DUO_STORE_DEVICE_H
#define DUO_STORE_DEVICE_H

#include <stdint.h>

#include "err.h"
#include "store.h"

/* Adds a confirmed device; ERR_CONFLICT when the stage already has one for this Duo
 * user. Writes the new device's id and uuid (uuid_out: 40 bytes, the caller's). kind is
 * "user_id" or "username" (what duo_user_id holds). */
int store_device_add(store *s, int64_t user_id, int64_t stage_id, const char *duo_user_id,
                     const char *kind, const char *name, int64_t *id_out, char *uuid_out, err_t *e);

/* A device as an operator sees it. Strings borrowed, valid during the callback only. */
typedef struct device_view {
    int64_t id;
    const char *uuid;
    const char *stage_uuid;
    const char *stage_name;
    const char *username;
    const char *duo_user_id;
    const char *duo_user_kind;
    const char *name;
    int confirmed;
    const char *created_at; /* ISO 8601 UTC */
    const char *last_used;  /* NULL when never used */
} device_view;

/* Called once per row; a negative return stops the walk and is returned. */
typedef int (*device_view_fn)(const device_view *v, void *arg);

/* Walks devices by id, optionally only those of stage_ref (uuid or name) and/or username
 * (NULL: any), at most limit (<= 0: all). ERR_NOTFOUND when stage_ref names no stage. */
int store_device_list(store *s, const char *stage_ref, const char *username, long limit,
                      device_view_fn fn, void *arg, err_t *e);

/* Deletes one device by numeric id or uuid. ERR_INVAL (neither), ERR_NOTFOUND, ERR_DB. */
int store_device_delete(store *s, const char *id_or_uuid, err_t *e);

#endif

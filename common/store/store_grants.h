/* store_grants.h - least-privilege database roles for the workers.
 *
 * Each worker kind connects as its own role, which may read and write exactly the tables
 * its jobs use and nothing else: no superuser, no CREATE on the database or the schema,
 * no DDL, no table it does not use. store_grants_apply() makes the grants so (revoking
 * anything else), idempotently, and checks what grants cannot fix (a superuser role, a
 * role that owns the database). The table of privileges lives in store_grants.c and is
 * printed by store_grants_doc() for the documentation. */
#ifndef DUO_STORE_GRANTS_H
#define DUO_STORE_GRANTS_H

#include <stdio.h>

#include "err.h"
#include "store.h"

/* Worker kinds, in the order of store_grant_roles.role[]. */
enum { STORE_GRANT_ENROLL, STORE_GRANT_AUTH, STORE_GRANT_IMPORT, STORE_GRANT_KINDS };

/* Role names per kind (borrowed for the call) and the setting each comes from (for
 * messages). A NULL role or "none" skips that kind. */
typedef struct store_grant_roles {
    const char *role[STORE_GRANT_KINDS];
    const char *setting[STORE_GRANT_KINDS];
} store_grant_roles;

/* In one transaction under the migration lock: for every named role, revokes every
 * privilege on the schema's tables, sequences and the project's functions, then grants
 * what its kind needs. Fails (ERR_CONFIG, naming the setting) when a role does not exist,
 * is not a plain lowercase identifier, is a superuser or owns the database; nothing is
 * changed then. *granted (may be NULL) receives how many roles were granted. */
int store_grants_apply(store *s, const store_grant_roles *r, int *granted, err_t *e);

/* Writes the privilege table (Markdown) to out. */
void store_grants_doc(FILE *out);

#endif

/* store_admin.h - TRANSITION ONLY: the entity headers that replaced store_admin.c, for
 * the one includer outside this branch's reach (common/stage/stage.h). New code includes
 * the header it needs: store_stage.h, store_user.h, store_device.h or store_keys.h.
 * Remove this file once stage.h includes store_stage.h. */
#ifndef DUO_STORE_ADMIN_H
#define DUO_STORE_ADMIN_H

#include "store_device.h"
#include "store_keys.h"
#include "store_stage.h"
#include "store_user.h"

#endif

/* tl_pytest.h - runs the Python client's pytest suite (clients/python/tests) against a
 * stack built by tl_stack: the package is installed from the checkout into a virtual
 * environment under the build tree that uses Debian's python3-pika, python3-aio-pika,
 * python3-msgpack and python3-pytest (--system-site-packages, never a package index). */
#ifndef DUO_TL_PYTEST_H
#define DUO_TL_PYTEST_H

#include "tl_stack.h"

/* Installs the package into $DUO_BIN_DIR/../client-py-<venv_tag> (made once), exports the
 * stack's names (DUO_STAGE_UUID, EMU_ACCOUNT, EMU_AUTH_IKEY, DUO_SOURCE_DIR) and runs
 * pytest on the tests selected by the marker expression `markers`. Returns pytest's exit
 * status (0: every selected test passed; 5: none was selected), -1 when the environment
 * could not be made. */
int tl_pytest(tl_stack *s, const char *venv_tag, const char *markers);

#endif

/* paths.h - where installed data (migrations/, schemas/) is found at run time. */
#ifndef DUO_PATHS_H
#define DUO_PATHS_H

#include <stddef.h>

/* Finds the data folder `what` ("migrations" or "schemas"): $DUO_<WHAT>_DIR, then the
 * installed share folder, then the source tree this binary was built from. Writes the
 * path to out; returns 0, or -1 when none exists. */
int paths_find(const char *what, char *out, size_t outlen);

#endif

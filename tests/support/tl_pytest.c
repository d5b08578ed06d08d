/* tl_pytest.c - the Python client's tests against a tl_stack (see tl_pytest.h). */
#include "tl_pytest.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

static int sh(const char *cmd)
{
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

int tl_pytest(tl_stack *s, const char *venv_tag, const char *markers)
{
    const char *src = tl_env("DUO_SOURCE_DIR");
    char venv[512], cmd[8192];
    int n = snprintf(venv, sizeof venv, "%s/../client-py-%s", tl_env("DUO_BIN_DIR"), venv_tag);
    if (n < 0 || (size_t)n >= sizeof venv)
        return -1;
    /* A copy of the package's folder is what gets built, so the checkout stays clean. */
    snprintf(cmd, sizeof cmd,
             "set -e; [ -x '%s/bin/python' ] || /usr/bin/python3 -m venv --system-site-packages "
             "'%s'; rm -rf '%s/pkg'; cp -r '%s/clients/python' '%s/pkg'; "
             "'%s/bin/python' -m pip install --quiet --no-index --no-build-isolation "
             "--no-deps --force-reinstall '%s/pkg' >'%s/pip.log' 2>&1 || "
             "{ cat '%s/pip.log' >&2; exit 1; }",
             venv, venv, venv, src, venv, venv, venv, venv, venv);
    if (sh(cmd) != 0) {
        fprintf(stderr, "tl_pytest: cannot install clients/python into %s\n", venv);
        return -1;
    }
    setenv("DUO_STAGE_UUID", s->stage_uuid, 1);
    setenv("EMU_ACCOUNT", s->account, 1);
    setenv("EMU_AUTH_IKEY", s->auth_ikey, 1);
    setenv("DUO_SOURCE_DIR", src, 1);
    /* From the venv's own folder: the tests import the installed package, not the
     * checkout's src/ (conftest falls back to it only when the package is missing). */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && ./bin/python -m pytest -p no:cacheprovider -q -rfE -m '%s' "
             "'%s/pkg/tests'",
             venv, markers, venv);
    return sh(cmd);
}

"""The package is typed: it ships py.typed, and mypy --strict (Debian's mypy) finds
nothing in it, as installed."""

import os
import subprocess
import sys

import duo_workers


def test_installed_package_is_typed():
    pkg = os.path.dirname(duo_workers.__file__)
    assert os.path.isfile(os.path.join(pkg, "py.typed"))
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports",
                          "--cache-dir=/dev/null", pkg], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-500:]

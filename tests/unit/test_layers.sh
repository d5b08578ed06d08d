#!/usr/bin/env bash
# test_layers.sh - the layers of common/ hold: no file of a lower layer includes a header
# of a higher one (the build also refuses it), and no two source files depend on each
# other in a cycle, judged from what their object files define and use (nm).
set -u
ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
BUILD="$(cd "${DUO_BIN_DIR:-$ROOT/build/bin}/.." && pwd)"
exec python3 - "$ROOT" "$BUILD" <<'PY'
import os, re, subprocess, sys
from collections import defaultdict

root, build = sys.argv[1], sys.argv[2]
# Each layer and what it may use (itself included), as common/CMakeLists.txt links them.
allowed = {
    "base": {"base"},
    "codec": {"base", "codec"},
    "store": {"base", "store"},
    "mq": {"base", "codec", "mq"},
    "duo": {"base", "duo"},
    "runtime": {"base", "codec", "store", "mq", "runtime"},
    "stage": {"base", "codec", "store", "mq", "duo", "runtime", "stage"},
}
layer_of_header = {}
for layer in allowed:
    for f in os.listdir(os.path.join(root, "common", layer)):
        if f.endswith(".h"):
            layer_of_header[f] = layer
failures = 0
for layer in allowed:
    folder = os.path.join(root, "common", layer)
    for f in sorted(os.listdir(folder)):
        if not f.endswith((".c", ".h")):
            continue
        for inc in re.findall(r'#include "([^"]+)"', open(os.path.join(folder, f)).read()):
            owner = layer_of_header.get(inc)
            if owner and owner not in allowed[layer]:
                print("layer violation: common/%s/%s includes %s (layer %s)" % (layer, f, inc, owner))
                failures += 1
# Cycles between files, from the objects of the common/ libraries and the workers.
defs, uses = {}, defaultdict(set)
for dirpath, _, files in os.walk(build):
    if "CMakeFiles" not in dirpath or "/tests/" in dirpath + "/" or "CompilerId" in dirpath:
        continue
    for f in files:
        if not f.endswith(".c.o"):
            continue
        obj = os.path.join(dirpath, f)
        name = os.path.relpath(obj, build)
        # Objects of sources that no longer exist (an older layout) are not the code.
        rel = obj.split(".dir/", 1)[-1][:-2]
        if not any(os.path.exists(os.path.join(root, base, rel)) for base in ("", "common")):
            continue
        out = subprocess.run(["nm", obj], capture_output=True, text=True).stdout
        for line in out.splitlines():
            p = line.split()
            if len(p) == 2 and p[0] == "U":
                uses[name].add(p[1])
            elif len(p) == 3 and p[1] in "TDBR":
                defs.setdefault(p[2], name)
edges = defaultdict(set)
for a, syms in uses.items():
    for s in syms:
        b = defs.get(s)
        if b and b != a:
            edges[a].add(b)
if not defs:
    print("no object files under %s: build first" % build)
    sys.exit(1)
index, low, stack, on, n = {}, {}, [], set(), [0]
sys.setrecursionlimit(10000)
def visit(v):
    global failures
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            print("cycle between files: " + " <-> ".join(sorted(comp)))
            failures += 1
for v in list(uses):
    if v not in index:
        visit(v)
print("%d object files checked, %d problem(s)" % (len(uses), failures))
sys.exit(1 if failures else 0)
PY

#!/usr/bin/python3
"""scripts/check-layers.py [ROOT] — who may include whom (docs/architecture.md, "Layers").

Reads every `#include "..."` line of the product (include/, common/, broker/, agents/) under ROOT
(default: the project) and fails, naming file, line and rule, when a file includes a
header of a higher layer than its own or outside what its side may see:

  common/   what both sides link (the wire's msgpack guard and msgpack<->JSON,
            helpers, UTF-8): only common/ and include/.
  broker/   a file's layer is its module's (store_index.c is `store`, config_yaml.c
            `config`); it may include headers of its own layer or lower. Lowest first:
              0 base        log clock, and common/ (util frame hmap seal keyfile strbuf figures),
                            include/carehub_wire.h
              1 services    store config schema keys job session metrics hook zap route budget
                            service httpd
              2 trail       (the hash chain: over the store)
              3 records     case (events and cases: over the store, writing the trail)
              4 domain      assign query turn deliver audit register silence phone
                            backup rekey web
              5 protocol    proto
              6 the broker  broker main
            It never includes anything of agents/.
  agents/lib/  libcarehub and the agents' runtime: include/, agents/lib/ and common/;
            nothing of broker/.
  agents/*.c, agents/NAME/  a program: the above, plus its own directory.
  include/  the public headers: only each other.

Exceptions are listed in ALLOWED with the reason each is still there; an exception that
no longer occurs is reported too (so the list only shrinks). Exit 0 clean, 1 violations,
2 usage. `make check` runs it, first on a copy with a planted violation, which it must
report (so a checker that finds nothing cannot pass).
"""

import os
import re
import sys

LAYERS = {
    0: ["util", "log", "clock", "frame", "hmap", "seal", "keyfile", "strbuf", "figures",
        "carehub_wire"],
    1: ["store", "config", "schema", "keys", "job", "session", "metrics", "hook", "zap", "route",
        "budget", "service", "httpd"],
    2: ["trail"],
    3: ["case"],
    4: ["assign", "query", "turn", "deliver", "audit", "register", "silence", "phone",
        "backup", "rekey", "web"],
    5: ["proto"],
    6: ["broker", "main"],
}
RANK = {m: r for r, ms in LAYERS.items() for m in ms}

# (including file, included header): why it is allowed for now.
ALLOWED = {}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def module(path):
    """The module of a broker file: its name up to the first '_' or '.'
    (store_index.c -> store), or None when it is not one of the layers."""
    base = os.path.basename(path)
    name = re.split(r"[_.]", base, maxsplit=1)[0]
    if base.startswith("carehub_wire"):
        return "carehub_wire"
    return name if name in RANK else None


def includes(root, rel):
    with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if m:
                yield n, m.group(1)


def resolve(root, rel, inc):
    """Where the compiler finds `inc` included from rel (quotes: the file's own
    directory first, then -Ibroker -Icommon -Iinclude -Iagents/lib, as the Makefile)."""
    here = os.path.dirname(rel)
    for d in (here, "broker", "common", "include", "agents/lib", "agents"):
        cand = os.path.normpath(os.path.join(d, inc))
        if os.path.isfile(os.path.join(root, cand)):
            return cand
    return None


def check_file(root, rel, used):
    problems = []
    for n, inc in includes(root, rel):
        target = resolve(root, rel, inc)
        where = f"{rel}:{n}: #include \"{inc}\""
        if target is None:
            continue  # a system header in quotes, or generated: not ours
        key = (rel, os.path.basename(target))
        if key in ALLOWED:
            used.add(key)
            continue
        if rel.startswith("include/"):
            if not target.startswith("include/"):
                problems.append(f"{where}: a public header may include only public headers")
        elif rel.startswith("common/"):
            if not target.startswith(("common/", "include/")):
                problems.append(f"{where}: common/ is below both sides: it includes only common/ "
                                f"and include/, not {target}")
        elif rel.startswith("broker/"):
            if target.startswith("agents/"):
                problems.append(f"{where}: the broker never includes the agents' files")
                continue
            mine, theirs = module(rel), module(target)
            if target.startswith("include/") and theirs is None:
                problems.append(f"{where}: the broker includes only carehub_wire.h of include/")
            elif mine is None:
                problems.append(f"{rel}: not in any layer: add its module to LAYERS "
                                f"(scripts/check-layers.py) and docs/architecture.md")
                break
            elif theirs is None:
                problems.append(f"{where}: {target} is not in any layer")
            elif RANK[theirs] > RANK[mine]:
                problems.append(f"{where}: layer {RANK[mine]} ({mine}) includes layer "
                                f"{RANK[theirs]} ({theirs}): a lower layer never includes a higher one")
        elif rel.startswith("agents/"):
            lib = rel.startswith("agents/lib/")
            own = os.path.dirname(rel) if not lib else "agents/lib"
            prog_dir = None
            if not lib:  # agents/carehub-x.c owns agents/carehub-x/; agents/carehub-x/y.c too
                parts = rel.split("/")
                prog_dir = "agents/" + (parts[1][:-2] if len(parts) == 2 else parts[1])
            ok = (target.startswith(("include/", "agents/lib/", "common/"))
                  or (prog_dir and target.startswith(prog_dir + "/"))
                  or (not lib and os.path.dirname(target) == own))
            if not ok:
                what = "libcarehub" if lib else "an agent program"
                problems.append(f"{where}: {what} may include include/, agents/lib/, common/"
                                f"{'' if lib else ' and its own directory'}, not {target}")
    return problems


def product_files(root):
    for top in ("include", "common", "broker", "agents"):
        for d, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if f.endswith((".c", ".h")):
                    yield os.path.relpath(os.path.join(d, f), root)


def main(argv):
    if len(argv) > 2:
        print("usage: check-layers.py [ROOT]", file=sys.stderr)
        return 2
    root = argv[1] if len(argv) == 2 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    problems, used, n = [], set(), 0
    for rel in sorted(product_files(root)):
        n += 1
        problems += check_file(root, rel, used)
    for key in sorted(set(ALLOWED) - used):
        problems.append(f"{key[0]}: the exception for \"{key[1]}\" no longer occurs: remove it "
                        f"from ALLOWED (scripts/check-layers.py)")
    for p in problems:
        print(f"check-layers: {p}", file=sys.stderr)
    if problems:
        print(f"check-layers: FAIL: {len(problems)} problem(s) in {n} files", file=sys.stderr)
        return 1
    print(f"check-layers: {n} files, every include within its layer "
          f"({len(used)} listed exception(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

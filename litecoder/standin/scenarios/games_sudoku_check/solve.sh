#!/bin/bash
set -e
python3 - <<'PY'
import os
def ok(b):
    groups = b + [list(c) for c in zip(*b)]
    groups += [[b[r][c] for r in range(R, R + 3) for c in range(C, C + 3)]
               for R in (0, 3, 6) for C in (0, 3, 6)]
    return all(sorted(g) == list(range(1, 10)) for g in groups)
names = sorted(n for n in os.listdir("/app/boards") if n.endswith(".txt"))
good = [n for n in names
        if ok([[int(ch) for ch in ln.strip()] for ln in open(f"/app/boards/{n}") if ln.strip()])]
open("/app/valid.txt", "w").write("".join(n + "\n" for n in good))
PY

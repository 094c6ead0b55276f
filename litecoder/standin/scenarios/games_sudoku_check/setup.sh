#!/bin/bash
set -e
mkdir -p /app/boards
python3 - <<'PY'
base = [[(3 * (r % 3) + r // 3 + c) % 9 + 1 for c in range(9)] for r in range(9)]
def dump(name, b):
    open(f"/app/boards/{name}", "w").write("\n".join("".join(map(str, r)) for r in b) + "\n")
dump("a.txt", base)
bad = [row[:] for row in base]; bad[0][0], bad[0][1] = bad[0][1], bad[0][0]
dump("b.txt", bad)
dump("c.txt", [row[3:] + row[:3] for row in base])
PY

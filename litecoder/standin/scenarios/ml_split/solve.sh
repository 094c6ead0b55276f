#!/bin/bash
set -e
python3 - <<'PY'
import hashlib, json, os
os.makedirs("/app/data/splits", exist_ok=True)
out = {s: open(f"/app/data/splits/{s}.jsonl", "w") for s in ("train", "val", "test")}
counts = dict.fromkeys(out, 0)
for line in open("/app/data/corpus.jsonl"):
    h = int(hashlib.sha256(json.loads(line)["id"].encode()).hexdigest(), 16) % 10
    s = "test" if h == 0 else "val" if h == 1 else "train"
    out[s].write(line)
    counts[s] += 1
json.dump(counts, open("/app/data/splits/counts.json", "w"))
PY

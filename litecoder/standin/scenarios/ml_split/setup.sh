#!/bin/bash
set -e
mkdir -p /app/data
python3 - <<'PY'
import json
with open("/app/data/corpus.jsonl", "w") as f:
    for i in range(60):
        f.write(json.dumps({"id": f"doc-{i:03d}", "text": f"sample text {i}"}) + "\n")
PY

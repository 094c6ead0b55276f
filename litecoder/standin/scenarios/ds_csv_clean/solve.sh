#!/bin/bash
set -e
cat > /app/clean.py <<'PY'
import csv
import json
from collections import defaultdict
from datetime import datetime

rows, seen = [], set()
with open("/app/data/sales.csv", newline="") as f:
    for r in csv.DictReader(f):
        key = (r["date"], r["region"], r["amount"])
        if key in seen or not r["amount"].strip():
            continue
        seen.add(key)
        d = r["date"]
        if "/" in d:
            d = datetime.strptime(d, "%d/%m/%Y").strftime("%Y-%m-%d")
        rows.append({"date": d, "region": r["region"], "amount": float(r["amount"])})
rows.sort(key=lambda r: (r["date"], r["region"]))
with open("/app/data/sales_clean.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["date", "region", "amount"])
    for r in rows:
        w.writerow([r["date"], r["region"], f"{r['amount']:.2f}"])
totals = defaultdict(float)
for r in rows:
    totals[r["region"]] += r["amount"]
with open("/app/data/summary.json", "w") as f:
    json.dump({k: round(v, 2) for k, v in sorted(totals.items())}, f, indent=2)
PY
python3 /app/clean.py

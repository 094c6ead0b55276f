#!/bin/bash
set -e
python3 - <<'PY'
import csv, json
rows = list(csv.DictReader(open("/app/preds.csv")))
c = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
for r in rows:
    t, p = int(r["y_true"]), int(r["y_pred"])
    c["tp" if t and p else "fp" if p else "fn" if t else "tn"] += 1
prec = c["tp"] / (c["tp"] + c["fp"])
rec = c["tp"] / (c["tp"] + c["fn"])
m = {"accuracy": round((c["tp"] + c["tn"]) / len(rows), 4), "precision": round(prec, 4),
     "recall": round(rec, 4), "f1": round(2 * prec * rec / (prec + rec), 4)}
json.dump(m, open("/app/metrics.json", "w"))
json.dump(c, open("/app/confusion.json", "w"))
PY

#!/bin/bash
set -e
cat > /app/calc/calc/duration.py <<'PY'
import re

UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text):
    if not text:
        raise ValueError("empty duration")
    total = 0
    for amount, unit in re.findall(r"(\d+)([hms])", text):
        total += int(amount) * UNITS[unit]
    return total
PY

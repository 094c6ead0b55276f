"""How long `litecoder validate` takes on many task dirs: N copies of one task dir (default
600, the size of the later release's RL environment set), static checks only.

    python benchmarks/validate.py [TASK_DIR] [--copies 600]

Without TASK_DIR a small synthetic task is used. Target: seconds, not minutes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def synthetic(root: Path) -> Path:
    d = root / "task"
    for sub in ("environment", "tests", "solution"):
        (d / sub).mkdir(parents=True)
    (d / "instruction.md").write_text("Write hello to /app/out.txt.\n")
    (d / "task.toml").write_text("[environment]\ncpus = 1\nmemory_mb = 512\n")
    (d / "environment/Dockerfile").write_text("FROM ubuntu:24.04\nCOPY files/ /\n")
    (d / "environment/files").mkdir()
    (d / "environment/files/data.txt").write_text("x\n")
    (d / "tests/test.sh").write_text("#!/bin/bash\necho 1 > /logs/verifier/reward.txt\n")
    (d / "solution/solve.sh").write_text("#!/bin/bash\necho hello > /app/out.txt\n")
    return d


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("task", nargs="?", type=Path)
    p.add_argument("--copies", type=int, default=600)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = a.task or synthetic(Path(tmp) / "src")
        root = Path(tmp) / "tasks"
        root.mkdir()
        for i in range(a.copies):
            shutil.copytree(src, root / f"{src.name}-{i:04d}", symlinks=True)
        start = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "litecoder.cli", "validate", str(root), "--json"],
            capture_output=True,
            text=True,
        )
        took = time.perf_counter() - start
    n = len(r.stdout.splitlines())
    each = took / max(1, n) * 1000
    print(f"{n} task dirs validated in {took:.1f}s ({each:.1f} ms each, start-up included)")


if __name__ == "__main__":
    main()

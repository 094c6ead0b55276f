"""How litecoder's environment synthesis and rollouts grow with the number of environments.

For each N: a fresh project with N accepted tasks (the offline stand-in's runnable scenarios,
taken in turn; repeats share their image builds, as tasks of one base image do), then
`litecoder envprep` (every check on, the Harbor oracle trial included) and `litecoder rollout`
(Terminus-2, one attempt per environment) on this machine's Docker engine. Prints, per N:
environments and trials per hour, and litecoder's own time per environment and per trial beside
the work it orchestrates (builds, commands, checks, LLM calls; the Docker engine starting and
removing the agent steps' sandboxes; Harbor's wall time).

    python benchmarks/scale.py [--n 10 25 50 100] [--keep DIR]

Run it on an otherwise idle machine: it measures throughput (a CPU-bound neighbour halves it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from litecoder.io import write_records  # noqa: E402
from litecoder.records import JudgedTask  # noqa: E402
from litecoder.standin import library as S  # noqa: E402

# Scenarios whose environment the stand-in builds and whose task Terminus-2 solves.
GOOD = (
    "bt_zipapp", "coding_fix_test", "ds_csv_clean", "games_sudoku_check", "generic_line_report",
    "ml_metrics", "ml_split", "sa_disk_usage", "sci_simpson", "sec_checksums",
    "vc_merge_conflict", "vc_secret_purge",
)  # fmt: skip


def project(dst: Path, n: int) -> Path:
    dst.mkdir(parents=True)
    for name in ("conf", "litecoder", "dvc.yaml", "params.yaml"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)
    scen = S.scenarios()
    recs = []
    for i in range(n):
        s = scen[GOOD[i % len(GOOD)]]
        recs.append(
            JudgedTask(
                id=f"t-{i:03d}-{s.id.replace('_', '-')}",
                domain=s.domain if s.domain != "*" else "system_admin",
                subtopic="scale",
                task=s.task,
                teacher="bench",
                model="bench",
                mode="chat",
                template="chat",
                seed=i,
                outcome="ok",
                accepted=True,
            )
        )
    write_records(dst / "data/tasks/accepted.jsonl", recs)
    return dst


def stage(cmd: list[str], cwd: Path) -> float:
    t = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ})
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return time.monotonic() - t


def one(n: int, root: Path) -> dict[str, float]:
    p = project(root / f"n{n}", n)
    cli = str(Path(sys.executable).with_name("litecoder"))
    envprep_s = stage([cli, "envprep", "tracking=disabled"], p)
    rollout_s = stage([cli, "rollout", "tracking=disabled", "rollout.split=all",
                       "rollout.n_attempts=1"], p)  # fmt: skip
    ep = json.loads((p / "metrics/envprep.json").read_text())
    ro = json.loads((p / "metrics/rollout.json").read_text())
    envs = ep["environments"]
    # Per task: build, commands (with the state capture), llm, validation (its containers and
    # the Harbor oracle trial included), the agent steps' sandboxes started and removed, total.
    mean = ep["mean_task_timings_s"]
    work = mean["build_s"] + mean["commands_s"] + mean["llm_s"] + mean["validation_s"]
    timing = ro["timing"]
    return {
        "n": n,
        "envs": envs,
        "envprep_s": envprep_s,
        "envs_per_h": 3600 * envs / envprep_s,
        "task_total_s": mean["total_s"],
        "task_work_s": work,
        "sandbox_per_env_s": mean["sandbox_s"],
        "overhead_per_env_s": mean["total_s"] - work - mean["sandbox_s"],
        "trials": ro["trials"],
        "rollout_s": rollout_s,
        "trials_per_h": 3600 * ro["trials"] / rollout_s,
        "harbor_trial_s": timing["mean_harbor_trial_s"],
        "overhead_per_trial_s": timing["litecoder_overhead_per_trial_s"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[10, 25, 50, 100])
    p.add_argument("--keep", type=Path, help="keep the projects here")
    a = p.parse_args()
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, Docker {_docker_version()}")
    cols = ["n", "envs", "envprep_s", "envs_per_h", "task_total_s", "task_work_s",
            "sandbox_per_env_s", "overhead_per_env_s", "trials", "rollout_s", "trials_per_h",
            "harbor_trial_s", "overhead_per_trial_s"]  # fmt: skip
    print(" | ".join(cols))
    with tempfile.TemporaryDirectory(prefix="litecoder-scale-") as tmp:
        root = a.keep or Path(tmp)
        for n in a.n:
            row = one(n, root)
            print(" | ".join(f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c])
                             for c in cols), flush=True)  # fmt: skip


def _docker_version() -> str:
    r = subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True,
                       text=True)  # fmt: skip
    return r.stdout.strip() or "?"


if __name__ == "__main__":
    main()

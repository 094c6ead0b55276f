"""Sweeps on real launchers: a single-node Slurm cluster (Debian's slurm-wlm + munge, started by
scripts/slurm_local.sh) through hydra/launcher=slurm (submitit), and a Ray head on loopback
through hydra/launcher=ray_cluster. Each runs a two-member multirun to completion; the members'
results, the sweep comparison and the W&B groups are as with the local launcher."""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from litecoder.tracking import read_offline_run
from tests.conftest import REPO, make_project, run

pytestmark = pytest.mark.cluster
SWEEP = ["--until", "dedup", "tracking=offline", "judge.criteria.clarity.threshold=1,5"]


@pytest.fixture(scope="module")
def slurm() -> Iterator[None]:
    r = subprocess.run(["bash", str(REPO / "scripts/slurm_local.sh")], capture_output=True,
                       text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    yield
    # The daemons stay up for the rest of the session (another module may use them).


def _check_sweep(project: Path) -> None:
    sweep = max((project / "multirun/smoke").iterdir())
    members = sorted(d for d in sweep.iterdir() if (d / "metrics").is_dir())
    assert len(members) == 2
    for m in members:
        for stage in ("sample", "judge", "dedup"):
            assert json.loads((m / f"metrics/{stage}.json").read_text())["stage"] == stage
    rows = list(csv.DictReader((sweep / "compare.csv").open()))
    assert [r["overrides"].split()[-1] for r in rows] == [
        "judge.criteria.clarity.threshold=1",
        "judge.criteria.clarity.threshold=5",
    ]
    # The stricter threshold accepts fewer of the same tasks.
    assert rows[0]["sampled"] == rows[1]["sampled"] == "14"
    assert int(rows[0]["accepted"]) > int(rows[1]["accepted"])
    runs = [read_offline_run(d) for m in members for d in (m / "wandb").glob("offline-run-*")]
    summaries = [r for r in runs if r["job_type"] == "summary"]
    assert len(summaries) == 2
    assert {r["group"] for r in runs} == {f"smoke/{sweep.name}"}


def test_two_member_sweep_on_slurm(slurm: None, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", git=False)
    launcher = ["hydra/launcher=slurm", "hydra.launcher.partition=local",
                "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
                "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=30",
                "hydra.launcher.setup=[]"]  # fmt: skip
    r = run(["litecoder", "run", "-m", *launcher, *SWEEP], project, timeout=1200)
    _check_sweep(project)
    # The members really ran as Slurm jobs (submitit's job folders, one per member).
    sweep = max((project / "multirun/smoke").iterdir())
    logs = list((sweep / ".submitit").glob("*_[01]/*_log.out"))
    assert len(logs) == 2, r.stderr[-2000:]


def test_two_member_sweep_on_a_ray_head(ray_head: str, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", git=False)
    launcher = ["hydra/launcher=ray_cluster", "hydra.launcher.ray.remote.num_gpus=0",
                "hydra.launcher.ray.remote.num_cpus=1"]  # fmt: skip
    r = run(["litecoder", "run", "-m", *launcher, *SWEEP], project, timeout=1200,
            env={"RAY_ADDRESS": ray_head})  # fmt: skip
    assert "_run_job pid=" in r.stdout + r.stderr  # the members ran as Ray tasks
    _check_sweep(project)

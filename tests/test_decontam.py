"""Decontamination: a benchmark task planted among synthesized ones is caught and named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from litecoder.config import Decontam
from litecoder.decontam import BenchmarkIndex
from litecoder.io import read_jsonl
from litecoder.pipeline import run_stage
from litecoder.standin import StandIn
from tests.conftest import compose_cfg

BENCH = {
    # Harbor layout: instruction.md
    "fix-nginx-tls": (
        "The nginx server in /etc/nginx serves the site over plain HTTP only. Configure it to "
        "serve https://localhost:8443 with the self-signed certificate in /certs, redirect all "
        "HTTP requests on port 8080 to HTTPS, and make sure `nginx -t` passes."
    ),
    "csv-dedupe-report": (
        "Read every CSV file under /data/raw, drop rows whose (user_id, timestamp) pair repeats, "
        "and write /data/report.json with the number of rows kept per file and the total."
    ),
}
# The original Terminal-Bench layout: task.yaml with an `instruction`.
TB1 = {
    "git-rebase-recover": (
        "A rebase in /repo went wrong and the commit that added src/parser.c is gone from the "
        "branch main. Recover the lost commit from the reflog, put it back on main on top of "
        "the current head, and leave the working tree clean."
    )
}
SYNTHETIC = [
    "Write a bash script /opt/backup.sh that archives /var/www into a dated tar.gz under "
    "/backups and keeps only the seven newest archives.",
    "Train a logistic regression on /data/iris.csv with scikit-learn, save the model to "
    "/models/iris.joblib and print the held-out accuracy to /models/metrics.txt.",
    "Set up a cron job for user deploy that rotates /var/log/app/*.log every night at 02:00 "
    "with logrotate, compressing old logs and keeping 14 of them.",
]


def _benchmark(root: Path) -> Path:
    bench = root / "bench"
    for name, text in BENCH.items():
        (bench / "tasks" / name).mkdir(parents=True)
        (bench / "tasks" / name / "instruction.md").write_text(text + "\n")
    for name, text in TB1.items():
        (bench / "tasks" / name).mkdir(parents=True)
        (bench / "tasks" / name / "task.yaml").write_text(
            yaml.safe_dump({"instruction": text, "difficulty": "medium"})
        )
    return bench


def test_planted_benchmark_tasks_are_caught_and_named(tmp_path: Path) -> None:
    index = BenchmarkIndex.load(Decontam(benchmarks={"tb": str(_benchmark(tmp_path))}), tmp_path)
    assert index is not None and len(index) == 3
    # Reworded copies: a sentence added in front, a path and a port changed.
    planted_harbor = "You are on a web server. " + BENCH["fix-nginx-tls"].replace("8080", "80")
    planted_tb1 = TB1["git-rebase-recover"].replace("/repo", "/srv/project") + " Do not force push."
    hit = index.match(planted_harbor)
    assert hit is not None and hit.name == "tb/fix-nginx-tls" and hit.score >= 0.5
    hit = index.match(planted_tb1)
    assert hit is not None and hit.name == "tb/git-rebase-recover"
    # Unrelated tasks in the same domains are left alone.
    assert [index.match(t) for t in SYNTHETIC] == [None, None, None]
    # Sharing a topic is not contamination.
    assert index.match("Configure nginx to serve a static site from /srv/www on port 8000.") is None


def test_no_benchmark_configured_means_no_index(tmp_path: Path) -> None:
    assert BenchmarkIndex.load(Decontam(), tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no tasks"):
        BenchmarkIndex.load(Decontam(benchmarks={"x": str(tmp_path)}), tmp_path)


def test_dedup_stage_drops_a_task_that_repeats_a_benchmark(
    stand_in: StandIn, tmp_path: Path
) -> None:
    cfg = compose_cfg(base_url=stand_in.base_url)
    for s in ("sample", "judge", "dedup"):
        run_stage(s, cfg, root=tmp_path, workdir=tmp_path)
    accepted = read_jsonl(tmp_path / "data/tasks/accepted.jsonl")
    assert accepted
    # Plant one of this run's accepted tasks, lightly edited, in a benchmark of two tasks.
    victim = accepted[len(accepted) // 2]
    bench = _benchmark(tmp_path)
    (bench / "tasks" / "planted").mkdir()
    (bench / "tasks" / "planted" / "instruction.md").write_text(
        "Context: a fresh container. " + victim["task"] + "\n"
    )
    cfg = compose_cfg(f"+dedup.decontam.benchmarks.tb2={bench}", base_url=stand_in.base_url)
    metrics = run_stage("dedup", cfg, root=tmp_path, workdir=tmp_path)
    dups = read_jsonl(tmp_path / "data/tasks/duplicates.jsonl")
    contaminated = [d for d in dups if d["dedup"] == "decontam"]
    assert [(d["id"], d["duplicate_of"]) for d in contaminated] == [(victim["id"], "tb2/planted")]
    kept = {r["id"] for r in read_jsonl(tmp_path / "data/tasks/accepted.jsonl")}
    assert victim["id"] not in kept and len(kept) == len(accepted) - 1
    assert metrics["contaminated"] == 1
    assert metrics["contaminated_per_benchmark"] == {"tb2": 1}

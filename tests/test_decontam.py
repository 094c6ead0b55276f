"""Decontamination: a benchmark task planted among synthesized ones is caught and named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from litecoder.config import Decontam
from litecoder.context import run_stage
from litecoder.decontam import BenchmarkIndex
from litecoder.io import read_jsonl
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


def test_a_long_text_that_embeds_a_whole_benchmark_instruction_is_caught(tmp_path: Path) -> None:
    """Containment is measured against the benchmark text: wrapping a benchmark instruction in
    three times its length of other words does not hide it."""
    index = BenchmarkIndex.load(Decontam(benchmarks={"tb": str(_benchmark(tmp_path))}), tmp_path)
    assert index is not None
    padding = " ".join(SYNTHETIC) + " " + " ".join(SYNTHETIC)
    embedded = f"{padding} Also: {BENCH['csv-dedupe-report']} {padding}"
    hit = index.match(embedded)
    assert hit is not None and hit.name == "tb/csv-dedupe-report" and hit.how == "ngram"
    assert index.match(padding) is None


def test_external_task_sets_and_sft_rows_are_checked(tmp_path: Path) -> None:
    import json

    from litecoder.config import TaskSet
    from litecoder.stages.rollout import external_tasks

    bench = _benchmark(tmp_path)
    # An external task set: one task that repeats a benchmark task inside a longer text.
    ext = tmp_path / "ext"
    copied = "Setup first. " + TB1["git-rebase-recover"] + " " + SYNTHETIC[1]
    for name, text in (("fine", SYNTHETIC[0]), ("copied", copied)):
        d = ext / name
        for sub in ("environment", "tests", "solution"):
            (d / sub).mkdir(parents=True)
        (d / "instruction.md").write_text(text + "\n")
        (d / "environment/Dockerfile").write_text("FROM litecoder-base:bookworm\n")
        (d / "tests/test.sh").write_text("echo 1 > /logs/verifier/reward.txt\n")
        (d / "solution/solve.sh").write_text("true\n")
        (d / "task.toml").write_text('[environment]\nnetwork_mode = "no-network"\n')
    cfg = compose_cfg(f"+dedup.decontam.benchmarks.tb={bench}")
    ok, bad = external_tasks(cfg, TaskSet(name="ext", source="path", path=str(ext)), tmp_path)
    assert [d.name for d in ok] == ["fine"]
    [left] = bad
    assert left["task"] == "copied"
    assert any(f["check"] == "decontam" and "tb/git-rebase-recover" in f["problem"]
               for f in left["findings"])  # fmt: skip

    # External SFT rows: the one whose prompt repeats a benchmark task is dropped, counted.
    rows = tmp_path / "rows.jsonl"
    prompts = [SYNTHETIC[2], "Please: " + BENCH["fix-nginx-tls"]]
    lines = [
        json.dumps(
            {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "done"}]}
        )
        for p in prompts
    ]
    rows.write_text("\n".join(lines) + "\n")
    (tmp_path / "data/trajectories").mkdir(parents=True)
    (tmp_path / "data/trajectories/kept.jsonl").write_text("")
    cfg = compose_cfg(
        f"+dedup.decontam.benchmarks.tb={bench}",
        f"sft.external=[{{name: released, path: {rows}}}]",
        "sft.tokenizer.path=null",
    )
    metrics = run_stage("sft", cfg, root=tmp_path, workdir=tmp_path)
    kept = read_jsonl(tmp_path / "data/sft/train.jsonl")
    assert len(kept) == 1 and kept[0]["messages"][0]["content"] == SYNTHETIC[2]
    assert metrics["external_dropped"]["released"] == {"decontam": 1}
    assert metrics["external_decontam"] == {"tb": 1}

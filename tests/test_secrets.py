"""API keys come from the environment at call time and never land on disk or in logs."""

from __future__ import annotations

from pathlib import Path

from litecoder.io import read_jsonl
from litecoder.standin import StandIn
from litecoder.tracking import read_offline_run
from tests.conftest import make_project, run

CANARY = "sk-canary-7f3a9c1e5d2b4a60"


def test_api_key_never_written(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LC_CANARY_KEY", CANARY)
    # The server accepts only this key (as `vllm serve --api-key` would).
    with StandIn(api_key_env="LC_CANARY_KEY") as server:
        project = make_project(tmp_path / "p", git=False)
        (project / "conf/teacher/keyed.yaml").write_text(
            (project / "conf/teacher/offline.yaml")
            .read_text()
            .replace("name: offline", "name: keyed")
            .replace("base_url: null", f"base_url: {server.base_url}")
            .replace("api_key_env: null", "api_key_env: LC_CANARY_KEY")
            .replace("stand_in: true", "stand_in: false")
        )
        cfg = project / "conf/config.yaml"
        cfg.write_text(
            cfg.read_text()
            .replace("teacher@models.sample: offline", "teacher@models.sample: keyed")
            .replace("teacher@models.judge: offline", "teacher@models.judge: keyed")
        )
        run(["litecoder", "params"], project)
        for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
            run(cmd, project)
        r = run(["dvc", "repro", "-v", "dedup"], project, env={"WANDB_MODE": "offline"})
        assert server.stats()["faults"].get("401", 0) == 0

    recs = read_jsonl(project / "data/tasks/sampled.jsonl")
    assert recs and all(r["outcome"] == "ok" for r in recs)  # the key was used...
    assert "LC_CANARY_KEY" in (project / "params.yaml").read_text()  # ...by name only
    runs = [read_offline_run(d) for d in sorted((project / "wandb").glob("offline-run-*"))]
    assert {(r["group"], r["job_type"]) for r in runs} == {
        ("smoke", "sample"),
        ("smoke", "judge"),
        ("smoke", "dedup"),
    }
    sample_run = next(r for r in runs if r["job_type"] == "sample")
    assert sample_run["config"]["models"]["sample"]["api_key_env"] == "LC_CANARY_KEY"
    assert sample_run["summary"]["sampled"] == len(recs)
    assert CANARY not in r.stdout + r.stderr
    leaks = [p for p in project.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert leaks == []

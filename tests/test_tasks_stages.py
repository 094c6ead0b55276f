"""sample -> judge -> dedup against the offline stand-in teacher."""

from __future__ import annotations

from pathlib import Path

import pytest

from litecoder.config import Dedup
from litecoder.context import run_stage
from litecoder.io import read_jsonl
from litecoder.records import JudgedTask
from litecoder.stages.dedup import dedup
from litecoder.stages.sample import allocate
from litecoder.standin import StandIn
from tests.conftest import compose_cfg


def _run(cfg, root: Path, stages=("sample", "judge", "dedup")) -> dict:
    return {s: run_stage(s, cfg, root=root, workdir=root) for s in stages}


def test_smoke_tasks(stand_in: StandIn, tmp_path: Path) -> None:
    cfg = compose_cfg(base_url=stand_in.base_url)
    m = _run(cfg, tmp_path)
    sampled = read_jsonl(tmp_path / "data/tasks/sampled.jsonl")
    judged = read_jsonl(tmp_path / "data/tasks/judged.jsonl")
    accepted = read_jsonl(tmp_path / "data/tasks/accepted.jsonl")
    dups = read_jsonl(tmp_path / "data/tasks/duplicates.jsonl")

    assert len(sampled) == 14 and all(r["outcome"] == "ok" for r in sampled)
    assert {r["domain"] for r in sampled} == set(cfg.taxonomy.domains)
    assert len({r["id"] for r in sampled}) == 14
    for r in sampled:
        assert r["task"] and r["teacher"] == "offline" and r["template"].startswith("<|im_system|>")
        assert r["tokens"]["completion"] > 0
    # Every sampled task has a verdict with a score and a reason per criterion.
    assert [r["id"] for r in judged] == [r["id"] for r in sampled]
    for r in judged:
        assert set(r["judge"]["scores"]) == set(cfg.judge.criteria)
        assert all(1 <= s["score"] <= 5 and s["reason"] for s in r["judge"]["scores"].values())
        assert r["accepted"] == (not r["rejected_by"])
    rejected = {r["task"][:30]: r["rejected_by"] for r in judged if not r["accepted"]}
    assert len(rejected) == 3 and any("safety" in v for v in rejected.values())
    # One exact and one near duplicate removed, each naming the kept task.
    kept_ids = {r["id"] for r in accepted}
    assert sorted(d["dedup"] for d in dups) == ["exact", "near"]
    assert all(d["duplicate_of"] in kept_ids for d in dups)
    assert len(accepted) + len(dups) == sum(r["accepted"] for r in judged) == 11
    # Metrics.
    assert m["sample"]["sampled"] == 14 and m["judge"]["accepted"] == 11
    assert m["dedup"]["kept"] == 9 and m["judge"]["per_criterion"]["safety"]["pass_rate"] < 1
    assert (tmp_path / "metrics/sample.json").exists()


def test_ids_are_stable(stand_in: StandIn, tmp_path: Path) -> None:
    cfg = compose_cfg("sampler.n_tasks=7", base_url=stand_in.base_url)
    _run(cfg, tmp_path / "a", ("sample",))
    _run(
        cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"cache": False})}),
        tmp_path / "b",
        ("sample",),
    )
    a = read_jsonl(tmp_path / "a/data/tasks/sampled.jsonl")
    b = read_jsonl(tmp_path / "b/data/tasks/sampled.jsonl")
    assert a == b


def test_chat_mode_sampling(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = compose_cfg(
        "teacher@models.sample=openai_chat",
        f"models.sample.base_url={stand_in.base_url}",
        "+models.sample.preflight=false",  # the stand-in does not serve this model
        "sampler.n_tasks=7",
    )
    _run(cfg, tmp_path, ("sample",))
    recs = read_jsonl(tmp_path / "data/tasks/sampled.jsonl")
    assert all(
        r["outcome"] == "ok" and r["mode"] == "chat" and r["template"] == "chat" for r in recs
    )
    assert any("git" in r["task"] for r in recs if r["domain"] == "version_control")


def test_every_task_ends_with_an_outcome_under_faults(tmp_path: Path) -> None:
    """20% faults of every kind: nothing lost, nothing crashes, every record has an outcome."""
    with StandIn(fault_rate=0.2, slow_s=3, seed=7) as server:
        cfg = compose_cfg(
            "sampler.n_tasks=60",
            "models.sample.timeout_s=1",
            "models.judge.timeout_s=1",
            "models.sample.max_wait_s=60",
            "models.judge.max_wait_s=60",
            "llm.cache=false",
            base_url=server.base_url,
        )
        m = _run(cfg, tmp_path)
        faults = server.stats()["faults"]
    assert set(faults) == {"429", "500", "slow", "drop", "malformed", "empty"}
    sampled = read_jsonl(tmp_path / "data/tasks/sampled.jsonl")
    judged = read_jsonl(tmp_path / "data/tasks/judged.jsonl")
    assert len(sampled) == len(judged) == 60
    for r in sampled:
        assert r["outcome"] in ("ok", "error")
        assert (r["task"] is not None) == (r["outcome"] == "ok")
        assert r["outcome"] == "ok" or r["error"]
    for r in judged:
        assert r["accepted"] or r["rejected_by"]
        if r["judge"] and r["judge"]["outcome"] == "error":
            assert r["judge"]["error"] and r["rejected_by"] == ["judge_error"]
    assert m["sample"]["sampled"] + m["sample"]["errors"] == 60
    assert m["sample"]["llm"]["total"]["retries"] > 0
    accepted = len(read_jsonl(tmp_path / "data/tasks/accepted.jsonl"))
    dups = len(read_jsonl(tmp_path / "data/tasks/duplicates.jsonl"))
    assert accepted + dups == m["judge"]["accepted"]


def test_allocate() -> None:
    assert allocate({"a": 1, "b": 1, "c": 2}, 10) == {"a": 3, "b": 2, "c": 5}  # tie: by name
    assert sum(allocate({str(i): 1.0 for i in range(7)}, 100).values()) == 100


def _judged(id: str, task: str) -> JudgedTask:
    return JudgedTask(
        id=id,
        domain="d",
        subtopic="s",
        task=task,
        teacher="t",
        model="m",
        mode="chat",
        template="chat",
        seed=0,
        outcome="ok",
        accepted=True,
    )


def test_dedup_rules() -> None:
    base = (
        "Resolve the merge conflict in /app/repo between main and feature so both options "
        "work and commit."
    )
    recs = [
        _judged("a", base),
        _judged("b", "  " + base.upper().replace(" ", "\n ") + " "),  # exact after normalising
        _judged("c", base.replace("commit.", "commit the merge.")),  # near
        _judged(
            "d", "Write a Makefile with build, test and clean targets for the project in /src."
        ),
    ]
    kept, removed = dedup(recs, Dedup(threshold=0.6))
    assert [r.id for r in kept] == ["a", "d"]
    assert {(r.id, r.duplicate_of, r.dedup) for r in removed} == {
        ("b", "a", "exact"),
        ("c", "a", "near"),
    }
    kept, removed = dedup(recs, Dedup(near=False))
    assert [r.id for r in kept] == ["a", "c", "d"]
    kept, _ = dedup(recs, Dedup(threshold=0.95))
    assert "c" in [r.id for r in kept]

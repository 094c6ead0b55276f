"""The offline stand-in is a test instrument: it answers by the metadata litecoder sends, never
by the wording of a prompt, and its scenarios are data."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from litecoder.io import read_jsonl
from litecoder.standin import library as S
from tests.conftest import make_project, run

PROMPT_KEYS = {"system_message", "system_prompt", "user_template", "chat_task_prompt"}


def _reword(text: str) -> str:
    """Every word spelt backwards, placeholders ({task}, ...) kept: no wording survives."""
    return re.sub(r"(\{[^{}]*\})|([A-Za-z]{3,})", lambda m: m.group(1) or m.group(2)[::-1], text)


def _reword_tree(node: Any, inside_prompts: bool = False) -> Any:
    if isinstance(node, dict):
        return {
            k: _reword_tree(v, inside_prompts or k == "prompts" or k in PROMPT_KEYS)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_reword_tree(v, inside_prompts) for v in node]
    if isinstance(node, str) and inside_prompts:
        return _reword(node)
    return node


@pytest.mark.docker
def test_reworded_prompts_change_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", git=False)
    changed = 0
    for f in [
        *(project / "conf/taxonomy").glob("*.yaml"),
        *(project / "conf/teacher").glob("*.yaml"),
        project / "conf/judge/default.yaml",
        project / "conf/envprep/default.yaml",
    ]:
        before = yaml.safe_load(f.read_text())
        after = _reword_tree(before)
        if after != before:
            f.write_text(yaml.safe_dump(after, sort_keys=False))
            changed += 1
    assert changed >= 4
    run(
        [
            "litecoder",
            "run",
            "--until",
            "filter",
            "tracking=disabled",
            "sampler.n_tasks=4",
            "envprep.validate.harbor_oracle=false",
            "rollout.n_attempts=1",
        ],
        project,
        timeout=1800,
    )
    sampled = read_jsonl(project / "data/tasks/sampled.jsonl")
    assert len(sampled) == 4 and all(r["outcome"] == "ok" for r in sampled)
    judged = read_jsonl(project / "data/tasks/judged.jsonl")
    assert all(r["judge"]["outcome"] == "ok" for r in judged)
    envprep = json.loads((project / "metrics/envprep.json").read_text())
    assert envprep["environments"] >= 2 and envprep["failed"] == 0
    kept = read_jsonl(project / "data/trajectories/kept.jsonl")
    assert kept, "no trajectory solved: the stand-in did not follow the reworded run"


def test_scenarios_are_data() -> None:
    every = S.scenarios()
    assert len(every) >= 30
    for s in every.values():
        d = S.ROOT / s.id
        assert (d / "task.md").read_text().strip() == s.task
        if s.runnable:
            assert (d / "solve.sh").read_text().startswith("#!/bin/bash\n")
            compile(s.tests, str(d / "test_outputs.py"), "exec")  # a real pytest module
    pools = S.pools()
    assert set(pools) >= {"version_control", "networking", "*"}
    # A scenario is found by its own text wherever it appears, whatever surrounds it.
    merge = S.by_id("vc_merge_conflict")
    assert S.find(f"any words at all\n<task>\n{merge.variants[0]}\n</task>") is merge
    assert S.find("nothing the stand-in wrote") is None

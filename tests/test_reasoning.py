"""Real teachers' output shapes everywhere a model answers: reasoning in a `<think>` block (or
only its closing tag) or in `reasoning_content`, JSON in a code fence, a draft object before
the answer, prose after it. The stages run against the offline stand-in answering in each
shape (standin/shapes.yaml): every record is valid and no reasoning reaches a task text, a
verdict or a command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from litecoder.io import read_jsonl
from litecoder.llm import InvalidOutput, parse_json_as, parse_json_object, split_reasoning
from litecoder.standin import StandIn
from litecoder.standin.server import load_shapes
from tests.conftest import make_project, point_offline_teacher, run

MARKER = "THINKING-MARKER-7Q"  # in every shape's reasoning (shapes.yaml)


def test_split_reasoning() -> None:
    assert split_reasoning("<think>a {b}</think>\n\nanswer") == ("answer", "a {b}")
    assert split_reasoning("a {b}\n</think>\nanswer") == (
        "answer",
        "a {b}",
    )  # opened by the template
    assert split_reasoning("<think>never ends {") == ("", "never ends {")
    assert split_reasoning("no reasoning") == ("no reasoning", "")
    assert split_reasoning("<think>1</think><think>2</think> ok") == ("ok", "1\n2")


def test_json_out_of_every_shape() -> None:
    def verdict(d: dict[str, object]) -> dict[str, object]:
        if not isinstance(d.get("scores"), dict):
            raise ValueError("scores is not a mapping")
        return d

    answer = {"scores": {"clarity": {"score": 4, "reason": "ok"}}}
    text = json.dumps(answer)
    for wrapped in (
        f'<think>I think {{not: json}} {{"scores": 1}}</think>\n{text}',
        f"Here:\n```json\n{text}\n```\nDone {{x}}.",
        f'{{"scores": "pending"}}\nFinal:\n{text}\nHope this helps {{:}}.',
        f"```\n{{broken\n```\n{text}",
    ):
        assert parse_json_as(wrapped, verdict) == answer, wrapped
    with pytest.raises(InvalidOutput, match="never ended"):
        parse_json_object("<think>still thinking {")
    with pytest.raises(InvalidOutput, match="no JSON object"):
        parse_json_object("<think>{a}</think> no json here")
    with pytest.raises(InvalidOutput, match="scores is not a mapping"):
        parse_json_as('{"scores": 1} {"scores": 2}', verdict)


@pytest.mark.parametrize("shape", sorted(load_shapes()))
def test_sample_and_judge_in_every_shape(shape: str, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", git=False)
    with StandIn(shape=shape) as server:
        point_offline_teacher(project, server.base_url)
        run(["litecoder", "sample"], project)
        run(["litecoder", "judge"], project)
    sampled = read_jsonl(project / "data/tasks/sampled.jsonl")
    judged = read_jsonl(project / "data/tasks/judged.jsonl")
    assert sampled and all(r["outcome"] == "ok" for r in sampled), shape
    assert all(r["judge"]["outcome"] == "ok" for r in judged), shape
    text = json.dumps(sampled) + json.dumps(judged)
    assert MARKER not in text and "<think>" not in text and "</think>" not in text


@pytest.mark.docker
def test_envprep_in_a_real_teachers_shape(tmp_path: Path) -> None:
    """The environment agent answering with reasoning first (its JSON parsing in every shape
    is the judge's, tested above): the task is built, and nothing of the reasoning is in its
    commands, its files or the history sent back to it."""
    shape = "think"
    from litecoder.standin import library as S
    from tests.test_envprep import FAST, _project_with_tasks

    project = _project_with_tasks(tmp_path, [S.by_id("sa_cache_cleanup")])
    with StandIn(shape=shape) as server:
        point_offline_teacher(project, server.base_url)
        run(["litecoder", "envprep", *FAST], project, timeout=1200)
    out = read_jsonl(project / "data/envs/outcomes.jsonl")
    assert [o["status"] for o in out] == ["ok"], out
    env = project / "data/envs/t-sa-cache-cleanup"
    for p in env.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert MARKER.encode() not in p.read_bytes(), p
    assert MARKER not in json.dumps(out)

"""Rollouts, filtering and the SFT dataset, on real Harbor trials against the stand-in."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from litecoder.config import RolloutAgent
from litecoder.filters import judge_trial
from litecoder.harbor import runner
from litecoder.io import read_jsonl
from litecoder.sandbox.trial import SPEC_NAME
from litecoder.stages.filter import read_trials
from litecoder.stages.rollout import assign, job_config
from litecoder.standin import StandIn
from litecoder.trajectory import FORMATS, Trajectory, load_atif, read_commands, render
from tests.conftest import (
    REPO,
    compose_cfg,
    litecoder_leftovers,
    make_project,
    point_offline_teacher,
    run,
)

pytestmark = pytest.mark.docker


def test_rollouts_are_harbor_jobs(smoke: Path) -> None:
    from harbor.models.trajectories import Trajectory as Atif

    m = json.loads((smoke / "metrics/rollout.json").read_text())
    splits = json.loads((smoke / "data/envs/splits.json").read_text())
    cfg = compose_cfg()
    assert m["trials"] == m["expected_trials"] == len(splits["train"]) * cfg.rollout.n_attempts
    assert set(m["per_agent"]) == {"terminus-2-json", "terminus-2-xml"}
    jobs = [d for d in (smoke / "data/rollouts").iterdir() if d.is_dir()]
    assert sorted(j.name.rsplit("-", 1)[0] for j in jobs) == ["terminus-2-json", "terminus-2-xml"]
    rewards = []
    for job in jobs:
        assert (job / "config.json").exists() and (job / "result.json").exists()
        for r in runner.trial_results(job):
            trial = job / r.trial_name
            Atif.model_validate_json((trial / "agent/trajectory.json").read_text())
            assert (trial / "verifier/reward.txt").exists()
            rewards.append(runner.reward(r))
            assert r.task_name in splits["train"]
    # The stand-in solves some tasks and fails or loops on others, graded by real verifiers.
    assert 0.0 in rewards and 1.0 in rewards
    assert m["timing"]["litecoder_overhead_s"] < m["timing"]["harbor_wall_s"]


def test_every_trial_is_kept_or_rejected_with_reasons(smoke: Path) -> None:
    kept = read_jsonl(smoke / "data/trajectories/kept.jsonl")
    rejected = read_jsonl(smoke / "data/trajectories/rejected.jsonl")
    m = json.loads((smoke / "metrics/filter.json").read_text())
    assert (
        len(kept) + len(rejected)
        == m["trials"]
        == json.loads((smoke / "metrics/rollout.json").read_text())["trials"]
    )
    assert kept and all(r["reward"] == 1.0 for r in kept)
    assert all(r["reasons"] and r["failure"] in ("infra", "agent", "quality") for r in rejected)
    rules = {reason["rule"] for r in rejected for reason in r["reasons"]}  # structured
    assert {"loop", "reward", "duplicate"} <= rules


def test_sft_dataset_loads_and_the_funnel_adds_up(smoke: Path) -> None:
    from datasets import load_dataset, load_from_disk

    rows = read_jsonl(smoke / "data/sft/train.jsonl")
    ds = load_dataset("json", data_files=str(smoke / "data/sft/train.jsonl"))["train"]
    hf = load_from_disk(str(smoke / "data/sft/hf"))
    assert len(ds) == len(hf) == len(rows) > 0
    for r in rows:
        roles = [m["role"] for m in r["messages"]]
        assert roles[-1] == "assistant" and set(roles) <= {"system", "user", "assistant", "tool"}
    assert "reports/smoke.md" in (smoke / "data/sft/README.md").read_text()  # the funnel
    assert (smoke / "reports/smoke.md").read_text().count("\n| total |") == 1
    wm = read_jsonl(smoke / "data/sft/world_model.jsonl")
    assert wm and all(w["messages"][-1]["role"] == "assistant" for w in wm)
    fun = json.loads((smoke / "metrics/funnel.json").read_text())["total"]
    assert fun["sampled"] >= fun["accepted"] >= fun["unique"] >= fun["environments"] > 0
    assert fun["trials"] >= fun["kept"] and fun["rows"] >= fun["kept"] > 0
    shown = run(["dvc", "metrics", "show", "--json"], smoke).stdout
    assert "metrics/funnel.json" in shown and '"rows"' in shown


def test_sft_rows_are_checked_against_the_students_template(smoke: Path, tmp_path: Path) -> None:
    """Every row rendered with SmolLM2's own chat template: no empty assistant turn; the
    trained tokens are exactly the ones Axolotl's chat_template strategy (as the smoke's recipe
    renders it) puts a label on; a format the template cannot render (tool calls in ChatML
    without a tool-call branch) stops the stage with one line, before anything is written."""
    m = json.loads((smoke / "metrics/sft.json").read_text())
    rows = read_jsonl(smoke / "data/sft/train.jsonl")
    assert m["rows_with_empty_assistant_turn"] == 0
    assert m["assistant_turns"] == sum(r["turns"] for r in rows) > 0
    assert m["trained_tokens"] == sum(r["trained_tokens"] for r in rows) > 0
    # Loss on assistant turns only: Axolotl's own count for the first rows.
    helpers = REPO / "litecoder/train_env/helpers.py"
    counts = run([str(REPO / ".venv-train/bin/python"), str(helpers), "trained-tokens",
                  "--config", str(smoke / "models/smoke/axolotl.yaml"),
                  "--rows", str(smoke / "data/sft/train.jsonl"), "--n", "3"], smoke,
                 timeout=600).stdout.splitlines()  # fmt: skip
    got = [json.loads(x) for x in counts if x.startswith("{")]
    assert [g["trained"] for g in got] == [r["trained_tokens"] for r in rows[:3]]
    assert all(0 < g["trained"] < g["total"] for g in got)  # the prompts carry no loss

    project = make_project(tmp_path / "p", git=False)
    shutil.copytree(smoke / "data/trajectories", project / "data/trajectories")
    r = run(["litecoder", "sft", "sft.formats={openai_tools: 1.0}", "tracking=disabled"],
            project, check=False, timeout=900)  # fmt: skip
    assert r.returncode == 5, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: sft: the student's chat template") and "openai_tools" in line
    assert not (project / "data/sft/train.jsonl").exists()


def _kept(smoke: Path) -> list[Trajectory]:
    return [
        Trajectory.from_dict(r["trajectory"])
        for r in read_jsonl(smoke / "data/trajectories/kept.jsonl")
    ]


def test_three_formats_read_back_to_the_same_commands(smoke: Path, tmp_path: Path) -> None:
    from datasets import load_dataset

    trajs = _kept(smoke)
    for fmt in FORMATS:
        recs = [render(t, fmt) for t in trajs]
        for t, rec in zip(trajs, recs, strict=True):
            assert read_commands(rec, fmt) == t.commands() != []
        path = tmp_path / f"{fmt}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
        assert len(load_dataset("json", data_files=str(path))["train"]) == len(recs)


def test_split_record_cuts_at_turn_boundaries(tmp_path: Path) -> None:
    """A record longer than the limit becomes pieces that each fit, each keep the task prompt,
    end with an assistant turn and (after the first) carry the last screen; no turn is lost."""
    from litecoder.stages.sft import build_tokenizer, n_tokens, split_record

    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a terminal agent."},
        {"role": "user", "content": "Task: fix the build in /app."},
    ]
    for i in range(8):
        msgs.append({"role": "assistant", "content": f"step {i}: run make -C /app target{i} " * 6})
        msgs.append({"role": "user", "content": f"screen {i}: make output line {i} " * 12})
    record = {"messages": msgs}
    tok = build_tokenizer([m["content"] for m in msgs], 512, tmp_path / "tok")
    full = n_tokens(tok, record)
    limit = full // 2
    pieces = split_record(record, tok, limit)
    assert len(pieces) >= 2
    asst = [m["content"] for p in pieces for m in p["messages"] if m["role"] == "assistant"]
    assert asst == [m["content"] for m in msgs if m["role"] == "assistant"]
    for k, p in enumerate(pieces):
        assert n_tokens(tok, p) <= limit and p["messages"][-1]["role"] == "assistant"
        assert p["messages"][0] == msgs[0]
        assert p["messages"][1]["content"].startswith(msgs[1]["content"])
        assert ("(continued)" in p["messages"][1]["content"]) == (k > 0)
    # One turn alone over the limit: nothing fits, the caller drops the record.
    assert split_record(record, tok, n_tokens(tok, {"messages": msgs[:3]}) - 1) == []


def test_length_policy_splits_or_drops(smoke: Path, tmp_path: Path) -> None:
    from litecoder.context import stage_context
    from litecoder.stages import sft

    work = tmp_path / "w"
    shutil.copytree(smoke / "data/trajectories", work / "data/trajectories")

    def build(*overrides: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        with stage_context(compose_cfg(*overrides), work, work) as ctx:
            m = sft.run(ctx)
        return m, read_jsonl(work / "data/sft/train.jsonl")

    # The limit comes from the data (how long the smoke run's trajectories are varies): just
    # under the longest one, so at least one trajectory is over it.
    m, rows = build("sft.max_seq_len=1000000")
    assert m["split_trajectories"] == m["dropped_overlength"] == 0 and rows
    limit = max(r["tokens"] for r in rows) - 1
    over = sum(r["tokens"] > limit for r in rows)
    for policy in ("split", "drop"):
        m, rows = build(f"sft.max_seq_len={limit}", f"sft.overlength={policy}")
        assert all(r["tokens"] <= limit for r in rows)
        assert m["split_trajectories"] + m["dropped_overlength"] == over
        if policy == "split":
            split = {r["trial"] for r in rows if r["part"] > 0}
            assert len(split) == m["split_trajectories"]
            assert len({r["trial"] for r in rows}) == m["trajectories"] - m["dropped_overlength"]
            for r in rows:
                if r["part"] > 0:
                    assert "(continued)" in json.dumps(r["messages"][:2])
        else:
            assert m["dropped_overlength"] == over == m["trajectories"] - len(rows)


def test_external_sft_datasets_merge_with_provenance(smoke: Path, tmp_path: Path) -> None:
    from datasets import Dataset, load_from_disk

    from litecoder.context import stage_context
    from litecoder.io import StageError
    from litecoder.stages import sft

    work = tmp_path / "w"
    shutil.copytree(smoke / "data/trajectories", work / "data/trajectories")
    chat = [
        {"role": "system", "content": "You are a terminal agent."},
        {"role": "user", "content": "List the files in /tmp."},
        {"role": "assistant", "content": '{"commands": [{"keystrokes": "ls /tmp\\n"}]}'},
    ]
    jsonl = tmp_path / "released.jsonl"
    lines = [
        {"messages": chat, "task_id": "released-1"},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ls"}]},
        {"messages": [{"role": "user", "content": "no answer"}]},  # dropped: no assistant turn
        {"messages": [{"role": "wizard", "content": "x"}, *chat[2:]]},  # dropped: unknown role
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in lines))
    Dataset.from_list([{"messages": chat}] * 3).save_to_disk(str(tmp_path / "hf-ds"))
    cfg = compose_cfg(
        f"sft.external=[{{name: released, path: {jsonl}}}, {{name: hf, path: {tmp_path}/hf-ds}}]"
    )
    with stage_context(cfg, work, work) as ctx:
        m = sft.run(ctx)
    rows = read_jsonl(work / "data/sft/train.jsonl")
    own = [r for r in rows if r["source"] == "litecoder"]
    assert own and m["per_source"] == {"litecoder": len(own), "released": 2, "hf": 3}
    assert m["external_dropped"] == {
        "released": {"no assistant turn": 1, "unknown role": 1},
        "hf": {},
    }
    released = [r for r in rows if r["source"] == "released"]
    assert released[0]["task_id"] == "released-1" and released[0]["format"] == "external"
    assert released[1]["messages"][1] == {"role": "assistant", "content": "ls"}  # ShareGPT
    assert all(r["tokens"] > 0 for r in rows)
    hf = load_from_disk(str(work / "data/sft/hf"))
    assert sorted(set(hf["source"])) == ["hf", "litecoder", "released"]
    assert "| released | 2 |" in (work / "data/sft/README.md").read_text()
    # A source that is not there, or has nothing usable, is a clear error.
    (tmp_path / "empty.jsonl").write_text("")
    for bad in (tmp_path / "missing.jsonl", tmp_path / "empty.jsonl"):
        cfg = compose_cfg(f"sft.external=[{{name: x, path: {bad}}}]")
        with (
            pytest.raises(StageError, match=r"sft\.external x"),
            stage_context(cfg, work, work) as ctx,
        ):
            sft.run(ctx)


# --- one ATIF fixture per filter rule, from real Harbor trials ---------------------------------


@pytest.fixture(scope="module")
def rule_trials(smoke: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Harbor trials of the stand-in told to solve (twice: duplicates), fail, loop, garble its
    output and stall, on one task; plus a task whose environment cannot start (infra)."""
    root = tmp_path_factory.mktemp("rules")
    envs = root / "envs"
    task = json.loads((smoke / "data/envs/splits.json").read_text())["train"][0]
    shutil.copytree(smoke / "data/envs" / task, envs / task)
    cfg = compose_cfg(
        "rollout.n_attempts=2", "rollout.n_concurrent=4", "rollout.agent_timeout_multiplier=0.02"
    )
    behaviours = ["solve", "fail", "loop", "garbled", "stall"]
    agents = [
        RolloutAgent(
            name="terminus-2",
            label=b,
            share=1,
            model=f"litecoder-offline-stand-in@{b}",
            kwargs={"parser_name": "json", "max_turns": 15},
        )
        for b in behaviours
    ]
    staged = runner.stage(
        [envs / task],
        root / "staged",
        run=runner.run_label(root / "jobs/rules"),
        policy=runner.TrialPolicy.of(cfg),
    )
    # A task whose environment cannot start: the image its trial spec names does not exist.
    broken = root / "staged/t-broken-env"
    shutil.copytree(staged[0], broken)
    spec = broken / "environment" / SPEC_NAME
    spec.write_text(re.sub(r'"image": "[^"]*"', '"image": "litecoder-trial/none:0"',
                           spec.read_text()))  # fmt: skip
    with StandIn() as server:
        conf = job_config(cfg, agents, [staged[0], broken], root / "jobs", "rules", server.base_url)
        (root / "job.json").write_text(json.dumps(conf))
        runner.run_harbor(
            [runner.harbor_bin(), "run", "-c", str(root / "job.json"), "-y"],
            env=runner.harbor_env(OPENAI_API_KEY="stand-in"),
            job_dir=root / "jobs/rules",
            log_path=root / "harbor.log",
            timeout_s=1200,
        )
    return root


def _judged(root: Path, *overrides: str) -> dict[str, list[tuple[str, list[str]]]]:
    cfg = compose_cfg(*overrides).filter
    out: dict[str, list[tuple[str, list[str]]]] = {}
    seen: dict[str, str] = {}
    for result, traj, _ in read_trials(root / "jobs", root / "envs"):
        model = result.config.agent.model_name
        key = ("broken:" if result.task_name == "t-broken-env" else "") + model.rsplit("@", 1)[1]
        kind, reasons = judge_trial(result, traj, cfg, seen)
        out.setdefault(key, []).append((kind, [str(r) for r in reasons]))
    return out


def test_filter_rules_on_real_trials(rule_trials: Path) -> None:
    j = _judged(rule_trials)
    assert [k for k, _ in j["solve"]] == ["", "quality"]  # kept once, then a duplicate
    assert j["solve"][1][1][0].startswith("duplicate:")
    for kind, reasons in j["fail"]:
        assert kind == "quality" and any(r.startswith("reward: 0.0") for r in reasons)
    for _, reasons in j["loop"]:
        assert any(r.startswith("loop: command repeated 8 times") for r in reasons)
    for _, reasons in j["garbled"]:
        assert any(r.startswith("parse_errors: 3 unparseable") for r in reasons), reasons
    for kind, reasons in j["stall"]:
        assert kind == "agent" and "agent_error: AgentTimeoutError" in reasons
    broken = [v for k, v in j.items() if k.startswith("broken:")]
    assert broken and all(
        kind == "infra" and reasons[0].startswith("infra:") for v in broken for kind, reasons in v
    )


def test_a_verifier_that_could_not_run_is_infrastructure_not_a_failure() -> None:
    """Harbor's verifier errors (no reward file: e.g. a test.sh that downloads its tools,
    offline) say nothing about the agent: the trial is kept apart, not rejected as its own."""
    from types import SimpleNamespace

    cfg = compose_cfg().filter
    for etype in ("RewardFileNotFoundError", "RewardFileEmptyError", "VerifierOutputParseError"):
        result = SimpleNamespace(
            exception_info=SimpleNamespace(exception_type=etype, exception_message="no reward"),
            verifier_result=None,
        )
        kind, reasons = judge_trial(result, None, cfg, {})
        assert kind == "infra" and reasons[0].rule == "infra", (etype, reasons)


def test_filter_thresholds_are_config(rule_trials: Path) -> None:
    # Lenient settings keep what the defaults reject, stricter ones reject what they keep.
    j = _judged(
        rule_trials,
        "filter.loop.max_repeats=20",
        "filter.min_reward=0",
        "filter.max_parse_error_run=5",
        "filter.dedupe=false",
    )
    assert all(kind == "" for kind, _ in j["loop"] + j["fail"] + j["garbled"] + j["solve"])
    j = _judged(rule_trials, "filter.max_turns=2", "filter.max_context_tokens=500")
    reasons = j["solve"][0][1]
    assert any(r.startswith("turns:") for r in reasons) and any(
        r.startswith("context:") for r in reasons
    )
    j = _judged(rule_trials, "filter.loop.with_observation=true", "filter.loop.max_repeats=3")
    assert all(any(r.startswith("loop:") for r in rs) for _, rs in j["loop"])


def test_trajectory_conversion_of_parse_errors(rule_trials: Path) -> None:
    job = rule_trials / "jobs/rules"
    for res in job.glob("*/result.json"):
        r = json.loads(res.read_text())
        if (
            r["config"]["agent"]["model_name"].endswith("@garbled")
            and r["task_name"] != "t-broken-env"
        ):
            t = load_atif(res.parent, "rules")
            assert t is not None and [x.parse_error for x in t.turns[:3]] == [True] * 3
            rec = render(t, "terminus_json")  # parse-error turns are left out of training data
            assert "unfinished" not in json.dumps(rec)
            break
    else:
        pytest.fail("no garbled trial")


def test_assign_shares() -> None:
    agents = [
        RolloutAgent(name="terminus-2", label="a", share=0.866),
        RolloutAgent(name="openhands", label="b", share=0.071),
        RolloutAgent(name="claude-code", label="c", share=0.063),
    ]
    tasks = [f"t-{i}" for i in range(100)]
    shares = assign(tasks, agents)
    assert {k: len(v) for k, v in shares.items()} == {"a": 87, "b": 7, "c": 6}
    assert sorted(t for v in shares.values() for t in v) == sorted(tasks)
    assert assign(list(reversed(tasks)), agents) == shares


def test_killed_rollout_resumes_only_missing_trials(smoke: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", git=False)
    train = json.loads((smoke / "data/envs/splits.json").read_text())["train"][:3]
    for t in train:
        shutil.copytree(smoke / "data/envs" / t, project / "data/envs" / t)
    (project / "data/envs/splits.json").write_text(json.dumps({"train": train, "heldout": []}))
    with StandIn() as server:
        point_offline_teacher(project, server.base_url)
        cmd = [
            "litecoder",
            "rollout",
            "rollout.n_attempts=1",
            "rollout.n_concurrent=1",
            "rollout=terminus2",
        ]
        proc = subprocess.Popen(
            cmd,
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 600
        done: dict[Path, int] = {}
        while time.monotonic() < deadline and not done:
            time.sleep(0.5)
            done = {
                p: p.stat().st_mtime_ns
                for p in (project / ".litecoder/rollout/jobs").glob("*/*/result.json")
                if json.loads(p.read_text()).get("finished_at")
            }
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert 1 <= len(done) < 3
        r = run(cmd, project, timeout=900)
    m = json.loads((project / "metrics/rollout.json").read_text())
    assert m["trials"] == 3 and m["resumed_jobs"] == 1, r.stderr[-2000:]
    finished = [p for p in (project / "data/rollouts").glob("*/*/result.json")]
    assert len({p.parent.name for p in finished}) == 3
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # not run again
    # The trial Harbor was in when killed left its container; the resumed run removed it.
    assert litecoder_leftovers()["containers"] == []


def test_external_task_set_is_validated_rolled_out_and_filtered(tmp_path: Path) -> None:
    """A task set from outside (original Terminal-Bench layout, migrated) instead of data/envs:
    its broken task is left out with its findings, the others run and reach `filter` with
    their provenance as domain."""
    from tests.test_evaluate import tb1_tasks

    tasks = tb1_tasks(tmp_path / "released")
    broken = tasks / "broken-task"
    shutil.copytree(tasks / "hello-file", broken)
    (broken / "Dockerfile").write_text(
        "FROM litecoder-base:bookworm\nCOPY missing.txt /app/\n"  # a COPY source that is absent
    )
    project = make_project(tmp_path / "p", git=False)
    with StandIn() as server:
        point_offline_teacher(project, server.base_url)
        cmd = [
            "litecoder", "rollout", "rollout=terminus2", "rollout.n_attempts=1",
            "rollout.use_envs=false", "rollout.agent_timeout_multiplier=0.05",
            f"rollout.external=[{{name: released, source: path, path: {tasks}}}]",
        ]  # fmt: skip
        r = run(cmd, project, check=False, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((project / "metrics/rollout.json").read_text())
    assert m["external_tasks"] == {"released": 2} and m["trials"] == 2
    [left_out] = m["external_rejected"]["released"]
    assert left_out["task"] == "broken-task"
    assert any(f["check"] == "copy_sources" for f in left_out["findings"])
    assert set(m["per_domain"]) == {"external/released"}
    run(["litecoder", "filter"], project)
    kept = read_jsonl(project / "data/trajectories/kept.jsonl")
    rejected = read_jsonl(project / "data/trajectories/rejected.jsonl")
    assert len(kept) + len(rejected) == 2
    assert {r["domain"] for r in kept + rejected} == {"external/released"}
    assert {r["agent_label"] for r in kept + rejected} == {"terminus-2"}


def _reasoning_trial(root: Path) -> Path:
    """An ATIF trajectory as Harbor's Terminus-2 writes it, from a teacher that reasons: one
    turn with `reasoning_content`, one with an inline <think> block."""
    from harbor.models.trajectories import Agent, Observation, ObservationResult, Step, ToolCall
    from harbor.models.trajectories import Trajectory as Atif

    prompt = "Task Description:\nCount the files in /data.\n\nCurrent terminal state:\n$ "

    def step(i: int, message: str, reasoning: str | None, keys: str) -> Step:
        return Step(
            step_id=i, source="agent", message=message, reasoning_content=reasoning,
            tool_calls=[ToolCall(tool_call_id=f"c{i}", function_name="bash_command",
                                 arguments={"keystrokes": keys, "duration": 1.0})],
            observation=Observation(results=[ObservationResult(content=f"screen {i}")]),
        )  # fmt: skip

    atif = Atif(
        session_id="s",
        agent=Agent(name="terminus-2", version="2", model_name="m", extra={"parser": "json"}),
        steps=[
            Step(step_id=1, source="user", message=prompt),
            step(2, "Analysis: look\nPlan: list", "The files are in /data.", "ls /data\n"),
            step(3, "<think>Now count them.</think>Analysis: count\nPlan: wc", None, "ls | wc\n"),
        ],
    )
    trial = root / "job" / "count-files__abc"
    (trial / "agent").mkdir(parents=True)
    (trial / "agent/trajectory.json").write_text(atif.model_dump_json())
    return trial


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_reasoning_is_stripped_kept_or_moved(fmt: str, tmp_path: Path) -> None:
    traj = load_atif(_reasoning_trial(tmp_path), "job")
    assert traj is not None
    assert [t.reasoning for t in traj.turns] == ["The files are in /data.", "Now count them."]
    assert traj.turns[1].analysis == "count"  # the <think> block is not the analysis
    for mode in ("strip", "keep", "move"):
        rec = render(traj, fmt, reasoning=mode)
        replies = [m for m in rec["messages"] if m["role"] == "assistant"]
        text = json.dumps(replies)
        if mode == "strip":
            assert "count them" not in text and "in /data." not in text
        elif mode == "keep":
            assert replies[1]["content"].startswith("<think>\nNow count them.\n</think>\n\n")
            assert "reasoning_content" not in replies[0]
        else:
            assert [m.get("reasoning_content") for m in replies] == [
                "The files are in /data.",
                "Now count them.",
            ]
            assert "<think>" not in text
        # Whatever happens to the reasoning, the commands read back the same.
        assert read_commands(rec, fmt) == ["ls /data\n", "ls | wc\n"]
    from litecoder.config import ConfigError

    with pytest.raises(ConfigError, match="unknown"):
        compose_cfg("+sft.reasoning_formats.nope=keep")


def _atif_trial(root: Path, agent: str, steps: list[dict[str, Any]]) -> Path:
    """An ATIF trajectory shaped as Harbor writes it for `agent` (Harbor's own models)."""
    from harbor.models.trajectories import Trajectory as Atif

    atif = Atif.model_validate(
        {
            "schema_version": "ATIF-v1.5",
            "session_id": "s",
            "agent": {"name": agent, "version": "1", "model_name": "m"},
            "steps": [{"step_id": i + 1, **s} for i, s in enumerate(steps)],
        }
    )
    trial = root / agent / "edit-config__x1"
    (trial / "agent").mkdir(parents=True)
    (trial / "agent/trajectory.json").write_text(atif.model_dump_json())
    return trial


def _call(i: int, name: str, args: dict[str, Any], out: str = "ok") -> dict[str, Any]:
    return {
        "tool_calls": [{"tool_call_id": f"c{i}", "function_name": name, "arguments": args}],
        "observation": {"results": [{"source_call_id": f"c{i}", "content": out}]},
    }


def _other_agents(work: Path) -> dict[str, list[dict[str, Any]]]:
    f = str(work / "app/config.ini")
    text = "[server]\nport = 80\nhost = 'x' # $HOME `id`\nLITECODER_EOF\n"
    openhands = [
        {"source": "system", "message": "You are OpenHands."},
        {"source": "user", "message": "Set the port in config.ini to 8080."},
        {"source": "agent", "message": "Running command: mkdir",
         **_call(1, "execute_bash", {"command": f"mkdir -p {work}/app", "security_risk": "LOW"})},
        {"source": "agent", "message": "I edited the file.",
         **_call(2, "str_replace_editor", {"command": "create", "path": f, "file_text": text})},
        {"source": "agent", "message": "",
         **_call(3, "think", {"thought": "Now change the port."})},
        {"source": "agent", "message": "I edited the file.",
         **_call(4, "str_replace_editor",
                 {"command": "str_replace", "path": f, "old_str": "port = 80",
                  "new_str": "port = 8080"})},
        {"source": "agent", "message": "Reading", **_call(5, "str_replace_editor",
                                                           {"command": "view", "path": f})},
        {"source": "agent", "message": "undo", **_call(6, "str_replace_editor",
                                                        {"command": "undo_edit", "path": f})},
        {"source": "agent", "message": "All done!", **_call(7, "finish", {"message": "Done."})},
    ]  # fmt: skip
    claude = [
        {"source": "user", "message": "Set the port in config.ini to 8080."},
        {"source": "agent", "message": "Creating it.", "reasoning_content": "Start with a file.",
         **_call(1, "Bash", {"command": f"mkdir -p {work}/app", "description": "dir"})},
        {"source": "agent", "message": "",
         **_call(2, "Write", {"file_path": f, "content": text.rstrip("\n")})},
        {"source": "agent", "message": "", "extra": {"is_sidechain": True},  # a sub-agent's
         **_call(3, "Bash", {"command": "rm -rf /"})},
        {"source": "agent", "message": "",
         **_call(4, "Edit", {"file_path": f, "old_string": "port = 80",
                             "new_string": "port = 8080"})},
        {"source": "agent", "message": "", **_call(5, "Read", {"file_path": f, "limit": 2})},
        {"source": "agent", "message": "", **_call(6, "Task", {"prompt": "review"})},
        {"source": "agent", "message": "Done.", "extra": {"stop_reason": "end_turn"}},
    ]  # fmt: skip
    return {"openhands": openhands, "claude-code": claude}


@pytest.mark.parametrize("agent", ["openhands", "claude-code"])
def test_other_agents_trajectories_convert_and_render(agent: str, tmp_path: Path) -> None:
    work = tmp_path / "fs"
    steps = _other_agents(work)[agent]
    traj = load_atif(_atif_trial(tmp_path / "jobs", agent, steps), agent)
    assert traj is not None and traj.agent == agent
    assert traj.instruction == "Set the port in config.ini to 8080."
    assert traj.turns[-1].task_complete
    assert "rm -rf /" not in json.dumps(traj.to_dict())  # sub-agent steps are not the agent's
    skipped = [c for t in traj.turns for c in t.skipped_calls]
    assert skipped == (["str_replace_editor"] if agent == "openhands" else ["Task"])
    # The keystrokes do what the tools did: run them in a shell.
    script = "".join(traj.commands())
    r = subprocess.run(["bash", "-e"], input=script, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    final = (work / "app/config.ini").read_text()
    expected = "[server]\nport = 8080\nhost = 'x' # $HOME `id`\nLITECODER_EOF\n"
    assert final == (expected if agent == "openhands" else expected.rstrip("\n"))
    # ...and every SFT format renders them and reads the same keystrokes back.
    for fmt in FORMATS:
        assert read_commands(render(traj, fmt), fmt) == traj.commands()


def test_every_agent_gets_the_gateway_and_a_token_never_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from litecoder.harbor import agents
    from litecoder.io import StageError
    from litecoder.stages.rollout import agent_config, teacher_env

    monkeypatch.setenv("MINIMAX_API_KEY", "secret-key")
    cfg = compose_cfg("rollout=mixed_scaffolds", "teacher@models.agent=minimax_m2")
    by_name = {
        a.name: agent_config(cfg, a, "http://127.0.0.1:9/v1", container_base="http://br:9/v1")
        for a in cfg.rollout.agents
    }
    assert by_name["terminus-2"]["kwargs"]["api_base"] == "http://127.0.0.1:9/v1"  # loopback
    assert by_name["openhands"]["kwargs"]["base_url"] == "http://br:9/v1"  # the bridge
    assert all(a["model_name"] == "openai/MiniMax-M2" for a in by_name.values())
    assert "secret-key" not in json.dumps(by_name) and "minimax.io" not in json.dumps(by_name)
    # Whatever the agent, Harbor's process gets the job's gateway token and nothing of ours.
    env = teacher_env(cfg, "lc-token")
    assert env["OPENAI_API_KEY"] == "lc-token" and "secret-key" not in env.values()
    assert set(env) <= {*runner.HARBOR_PASSES, "OPENAI_API_KEY", "LITELLM_LOCAL_MODEL_COST_MAP",
                        "HARBOR_TELEMETRY"}  # fmt: skip
    # What each agent is comes from Harbor's own classes and metadata.
    assert agents.check("openhands", local=True).in_container
    probe = "litecoder.standin.installed_agent:OpenHandsProbe"  # an import path, as Harbor takes
    assert agents.kind(probe).in_container and agents.kind("terminus-2").wiring == "terminus"
    # An agent whose API the gateway does not serve is refused, not run around it...
    for name, api in (("claude-code", "anthropic_messages"), ("codex", "openai_responses")):
        with pytest.raises(StageError, match=f"speaks {api}, which"):
            agents.check(name, local=True)
    # ...and so is one in Harbor's process that cannot be pointed at the gateway, and an
    # installed agent on a provider's machines (no route to this gateway).
    with pytest.raises(StageError, match="cannot point it at its gateway"):
        agents.check("dspy-rlm", local=True)
    with pytest.raises(StageError, match="environment=docker"):
        agents.check("openhands", local=False)
    with pytest.raises(StageError, match="bridge address"):
        agent_config(cfg, cfg.rollout.agents[1], "http://127.0.0.1:9/v1")

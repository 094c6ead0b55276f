"""Evaluation: benchmarks that cannot be had fail at once, a task set in the original
Terminal-Bench layout is migrated through Harbor and scored, a running endpoint is scored with
no `train` stage, unfinished trials are counted apart, a killed evaluation resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from litecoder.sandbox.trial import SPEC_NAME, TrialSpec
from litecoder.stages.evaluate import score
from tests.conftest import REPO, docker_ok, make_project, run
from tests.loopback_api import ScriptedAPI

# What the project's config counts as trials that did not finish (not as failures).
INFRA = yaml.safe_load((REPO / "conf/eval/common.yaml").read_text())["infra_error_types"]


# --- a small task set in the original Terminal-Bench layout -----------------------------------

COMPOSE = {
    "services": {
        "client": {
            "build": {"dockerfile": "Dockerfile"},
            "image": "${T_BENCH_TASK_DOCKER_CLIENT_IMAGE_NAME}",
            "container_name": "${T_BENCH_TASK_DOCKER_CLIENT_CONTAINER_NAME}",
            "command": ["sh", "-c", "sleep infinity"],
            "environment": ["TEST_DIR=${T_BENCH_TEST_DIR}"],
            "volumes": [
                "${T_BENCH_TASK_LOGS_PATH}:${T_BENCH_CONTAINER_LOGS_PATH}",
                "${T_BENCH_TASK_AGENT_LOGS_PATH}:${T_BENCH_CONTAINER_AGENT_LOGS_PATH}",
            ],
        }
    }
}
TASKS = {
    "hello-file": {
        "instruction": 'Create /app/hello.txt containing exactly the line "hello, terminal".',
        "setup": "",
        "test": 'test "$(cat /app/hello.txt)" = "hello, terminal"',
        "solution": 'echo "hello, terminal" > /app/hello.txt',
    },
    "count-lines": {
        "instruction": "Write the number of lines of /app/data.txt into /app/count.txt.",
        "setup": "RUN printf 'a\\nb\\nc\\n' > /app/data.txt",
        "test": 'test "$(cat /app/count.txt)" = "3"',
        "solution": "wc -l < /app/data.txt > /app/count.txt",
    },
}


def tb1_tasks(root: Path, agent_timeout_s: int = 900) -> Path:
    """task.yaml, Dockerfile on the offline base image, docker-compose.yaml, run-tests.sh."""
    for name, t in TASKS.items():
        d = root / name
        (d / "tests").mkdir(parents=True)
        (d / "task.yaml").write_text(
            yaml.safe_dump(
                {
                    "instruction": t["instruction"],
                    "author_name": "litecoder tests",
                    "difficulty": "easy",
                    "category": "file-operations",
                    "max_agent_timeout_sec": agent_timeout_s,
                    "max_test_timeout_sec": 60,
                }
            )
        )
        (d / "Dockerfile").write_text(f"FROM litecoder-base:bookworm\nWORKDIR /app\n{t['setup']}\n")
        (d / "docker-compose.yaml").write_text(yaml.safe_dump(COMPOSE))
        (d / "run-tests.sh").write_text(f"#!/bin/bash\n{t['test']}\n")
        (d / "solution.sh").write_text(f"#!/bin/bash\n{t['solution']}\n")
        (d / "tests/test_outputs.py").write_text("# the checks are in run-tests.sh\n")
    return root


# --- offline ----------------------------------------------------------------------------------

UNREACHABLE = {
    # What "offline" means for each source, whatever network the machine has.
    "terminal_bench_1": ["eval.terminal_bench.registry_url=https://registry.invalid/r.json"],
    "terminal_bench_2": [],
    "harbor_dataset": ["eval.dataset=someone/some-tasks@1.0"],
}


@pytest.mark.parametrize("bench", sorted(UNREACHABLE))
def test_offline_benchmarks_fail_at_once_before_any_model(bench: str, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", git=False)
    env = {"HARBOR_SUPABASE_URL": "https://registry.invalid", "HTTPS_PROXY": "", "https_proxy": ""}
    r = run(
        ["litecoder", "evaluate", f"eval={bench}", "tracking=disabled", *UNREACHABLE[bench]],
        project,
        check=False,
        env=env,
    )
    last = r.stderr.strip().splitlines()[-1]
    # "At once" is an order of events, not a time: the stage stopped in its preflight, before
    # it looked for a model, served one, fetched tasks or started a Harbor job.
    assert r.returncode == 5, r.stderr[-2000:]
    assert not (project / ".litecoder/evaluate").exists()
    assert not (project / ".litecoder/datasets").exists()
    assert last.startswith("error: ") and "needs the internet" in last, last
    assert "eval.source=path eval.path=" in last  # how to give a local copy
    # No model was looked for (there is none: no train stage ran) and none was served.
    assert "model" not in last.split("needs the internet")[0]
    assert not list(project.glob("results/**/serve-*.log"))


# --- scoring ----------------------------------------------------------------------------------


def _trial(task: str, reward: float | None, exc: str | None = None) -> Any:
    return SimpleNamespace(
        task_name=task,
        trial_name=f"{task}__x",
        verifier_result=SimpleNamespace(rewards={"reward": reward}) if reward is not None else None,
        exception_info=SimpleNamespace(exception_type=exc) if exc else None,
    )


def test_unfinished_trials_are_counted_apart_never_as_failures() -> None:
    results = [
        _trial("a", 1.0),
        _trial("a", 0.0),
        _trial("b", 1.0),
        _trial("b", None, "EnvironmentStartTimeoutError"),  # infra: not a failure
        _trial("c", None, "AgentTimeoutError"),  # the model ran out of time: a failure
        _trial("c", 0.0),
        _trial("d", None, "RewardFileNotFoundError"),  # the verifier could not run: not a result
    ]  # task d: no other trial (killed)
    s = score(results, k=2, tasks=["a", "b", "c", "d"], infra_error_types=INFRA, bootstrap=200)
    assert s["trials"] == 5 and s["expected_trials"] == 8
    assert s["unfinished"] == 3
    assert s["unfinished_by_type"] == {
        "EnvironmentStartTimeoutError": 1,
        "RewardFileNotFoundError": 1,
        "no result (killed or never started)": 1,
    }
    assert s["tasks_scored"] == 3 and "d" not in s["per_task"]
    assert s["per_task"]["b"]["rewards"] == [1.0]
    assert s["pass@1"] == pytest.approx((0.5 + 1.0 + 0.0) / 3, abs=1e-4)
    lo, hi = s["pass@1_ci95"]
    assert 0.0 <= lo <= s["pass@1"] <= hi <= 1.0 and lo < hi


# --- end to end (Docker, Harbor) --------------------------------------------------------------


def _solve_hello(n: int, body: dict[str, Any]) -> list[tuple[Any, ...]]:
    """A scripted endpoint that always does the same: it solves hello-file, not count-lines."""
    turns = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
    if turns == 0:
        cmd = {"keystrokes": 'echo "hello, terminal" > /app/hello.txt\n', "duration": 1.0}
        answer = {"analysis": "a", "plan": "p", "commands": [cmd], "task_complete": False}
    else:
        answer = {"analysis": "done", "plan": "done", "commands": [], "task_complete": True}
    return [("ok", json.dumps(answer))]


def _endpoint_eval(project: Path, tasks: Path, api: ScriptedAPI, *extra: str) -> list[str]:
    return [
        "litecoder",
        "evaluate",
        "eval=harbor_dataset",
        "tracking=disabled",
        "eval.benchmark=tb1-mini",
        "eval.source=path",
        f"eval.path={tasks}",
        "eval.network=false",
        "eval.k=2",
        "eval.n_concurrent=2",
        "eval.model.source=endpoint",
        f"eval.model.base_url={api.base_url}",
        "eval.model.name=scripted-agent",
        "eval.model.label=scripted",
        *extra,
    ]


@pytest.mark.docker
def test_running_endpoint_scored_on_migrated_terminal_bench_tasks(tmp_path: Path) -> None:
    if not docker_ok():
        pytest.skip("no Docker engine")
    tasks = tb1_tasks(tmp_path / "tb1")
    project = make_project(tmp_path / "p", git=False)
    with ScriptedAPI(script=_solve_hello, models=["scripted-agent"]) as api:
        r = run(_endpoint_eval(project, tasks, api), project, check=False, timeout=1800)
        assert r.returncode == 0, r.stderr[-3000:]
        requests = len(api.requests)
    assert requests >= 4  # every trial asked the endpoint
    assert not (project / "models").exists()  # no train stage, no model loaded
    res = json.loads((project / "results/tb1-mini.json").read_text())
    m = res["models"]["scripted"]
    assert m["tasks"] == 2 and m["trials"] == 4 and m["unfinished"] == 0
    assert res["per_task"]["scripted"]["hello-file"]["rewards"] == [1.0, 1.0]
    assert res["per_task"]["scripted"]["count-lines"]["rewards"] == [0.0, 0.0]
    assert m["pass@1"] == 0.5 and m["pass@2"] == 0.5
    # What the agent did, beside the scores: every turn parsed, one command a trial.
    assert m["parsed_turns"] == 1.0 and m["commands_per_trial"] == 1.0 and m["mean_turns"] >= 2
    # The tasks went through Harbor's migration, and the staged copies run prebuilt images
    # through litecoder's trial spec (the migrated compose placeholders are gone).
    migrated = list((project / ".litecoder/datasets").glob("migrated-*/tasks/hello-file"))
    assert migrated and (migrated[0] / "task.toml").is_file()
    staged = next((project / ".litecoder/evaluate/tasks").glob("*/hello-file"))
    assert [p.name for p in (staged / "environment").iterdir()] == [SPEC_NAME]
    spec = TrialSpec.read(staged / "environment")
    assert spec.services["main"].image.startswith("litecoder-trial/hello-file:")
    assert spec.services["main"].environment.get("TEST_DIR") in (None, "/tests")


@pytest.mark.docker
def test_killed_evaluation_resumes_without_rerunning_finished_trials(tmp_path: Path) -> None:
    if not docker_ok():
        pytest.skip("no Docker engine")
    tasks = tb1_tasks(tmp_path / "tb1")
    project = make_project(tmp_path / "p", git=False)
    with ScriptedAPI(script=_solve_hello, models=["scripted-agent"]) as api:
        cmd = _endpoint_eval(project, tasks, api, "eval.n_concurrent=1")
        proc = subprocess.Popen(
            cmd, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ}, start_new_session=True,
        )  # fmt: skip
        jobs = project / ".litecoder/evaluate/jobs"
        deadline = time.monotonic() + 900
        while not [p for p in jobs.glob("*/*/result.json") if _finished(p)]:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no trial finished"
            time.sleep(1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        first = {p.parent.name for p in jobs.glob("*/*/result.json") if _finished(p)}
        # The project moves before it resumes: Harbor's configs name absolute paths.
        old, project = project, Path(shutil.move(project, tmp_path / "moved"))
        jobs = project / ".litecoder/evaluate/jobs"
        r = run(cmd, project, check=False, timeout=1800)
        assert r.returncode == 0, r.stderr[-3000:]
    after = {p.parent.name for p in jobs.glob("*/*/result.json") if _finished(p)}
    assert first < after and len(after) == 4  # the finished trials were kept, not re-run
    assert not old.exists()  # nothing was written beside the old location
    assert all(str(old) not in p.read_text() for p in jobs.glob("**/config.json"))
    res = json.loads((project / "results/tb1-mini.json").read_text())
    assert res["models"]["scripted"]["trials"] == 4


def _finished(p: Path) -> bool:
    try:
        return bool(json.loads(p.read_text()).get("finished_at"))
    except (OSError, ValueError):
        return False


@pytest.mark.docker
def test_served_model_scored_on_migrated_terminal_bench_tasks(smoke: Path, tmp_path: Path) -> None:
    """The smoke run's checkpoint, served on loopback by the stage (no endpoint given), on the
    original-layout tasks: migrated, staged, run by Harbor, every trial accounted for."""
    tasks = tb1_tasks(tmp_path / "tb1")
    info = json.loads((smoke / "models/model.json").read_text())
    checkpoint = (smoke / info["checkpoint"]).resolve()
    project = make_project(tmp_path / "p", git=False)
    cmd = [
        "litecoder", "evaluate", "tracking=disabled", "eval.benchmark=tb1-mini",
        "eval.source=path", f"eval.path={tasks}", "eval.model.source=local",
        f"eval.model.path={checkpoint}", "eval.model.label=smoke-student", "eval.k=1",
        # The real student on CPU: one short turn is enough to show the server answered.
        "eval.agents=[{name: terminus-2, kwargs: {parser_name: json, max_turns: 1, "
        "llm_kwargs: {max_tokens: 32}}}]", "eval.agent_timeout_multiplier=0.05",
    ]  # fmt: skip
    r = run(cmd, project, check=False, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((project / "results/tb1-mini.json").read_text())
    m = res["models"]["smoke-student"]
    assert m["tasks"] == 2 and m["trials"] + m["unfinished"] == 2
    assert set(res["per_task"]["smoke-student"]) <= set(TASKS)
    log = (project / "results/tb1-mini/serve-smoke-student.log").read_text()
    assert 'POST /v1/chat/completions HTTP/1.1" 200' in log  # the served model answered
    assert len(list((project / "results/tb1-mini/jobs/smoke-student").glob("*/result.json"))) == 2

"""The gateway: agents' LLM traffic through litecoder's client layer (limits shared by all
trials, outages waited out, tokens and cost per trial and agent), on real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import openai
import pytest

from litecoder.config import Price, Teacher
from litecoder.gateway import SESSION_HEADER, Gateway
from litecoder.llm import META_HEADER, LLMClient
from litecoder.standin import StandIn
from tests.conftest import make_project, point_offline_teacher, run
from tests.flaky_proxy import FlakyProxy
from tests.loopback_api import ScriptedAPI


def _teacher(base_url: str, **kw: Any) -> Teacher:
    args: dict[str, Any] = {
        "name": "t",
        "model": "m",
        "base_url": base_url,
        "sampling_mode": "chat",
        "chat_task_prompt": "x",
        "timeout_s": 10,
        "max_wait_s": 60,
        "price": Price(input_per_mtok=1.0, output_per_mtok=2.0),
    }
    args.update(kw)
    return Teacher(**args)


def _agent_call(
    base: str, trial: str, *, stream: bool = False, key: str = "", model: str = "m"
) -> str:
    async def go() -> str:
        c = openai.AsyncOpenAI(base_url=base, api_key=key or "none", max_retries=0)
        headers = {SESSION_HEADER: f"{trial}__agent", META_HEADER: json.dumps({"agent": "a1"})}
        msgs = [{"role": "user", "content": f"hello from {trial}"}]
        try:
            if stream:
                s = await c.chat.completions.create(
                    model=model,
                    messages=msgs,
                    stream=True,
                    extra_headers=headers,  # type: ignore[arg-type]
                )
                return "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices])
            r = await c.chat.completions.create(model=model, messages=msgs, extra_headers=headers)  # type: ignore[arg-type]
            return r.choices[0].message.content or ""
        finally:
            await c.close()

    return asyncio.run(go())


def test_calls_are_accounted_per_trial_and_streams_pass_through() -> None:
    with ScriptedAPI(lambda n, body: [("ok", "answer text", 100, 50)]) as api:
        t = _teacher(api.base_url)
        with Gateway(lambda: LLMClient(t, share_identical=False)) as gw:
            key = gw.issue_token("job")
            assert _agent_call(gw.base_url, "trial-a", key=key) == "answer text"
            assert _agent_call(gw.base_url, "trial-a", key=key) == "answer text"
            assert _agent_call(gw.base_url, "trial-b", stream=True, key=key) == "answer text"
            summary = gw.summary()
        # The agent's metadata went on to the endpoint, with the trial added.
        meta = json.loads({k.lower(): v for k, v in api.headers[0].items()}["x-litecoder-request"])
        assert meta == {"agent": "a1", "trial": "trial-a"}
        # The same request from two calls is not shared or cached: each is its own sample.
        assert len(api.requests) == 3
    per = summary["per_trial"]
    assert per["trial-a"]["calls"] == 2 and per["trial-a"]["prompt_tokens"] == 200
    assert per["trial-b"]["calls"] == 1 and per["trial-b"]["completion_tokens"] == 50
    assert per["trial-a"]["cost_usd"] == pytest.approx(2 * (100 * 1 + 50 * 2) / 1e6)
    assert summary["total"]["calls"] == 3 and summary["per_agent"]["a1"]["calls"] == 3
    assert summary["per_agent"]["a1"]["requests"] == 3  # not 0 beside its tokens


def test_an_outage_waits_instead_of_failing_the_agent() -> None:
    down = {"n": 0}

    def script(n: int, body: dict[str, Any]) -> list[Any]:
        down["n"] += 1
        return [("status", 503)] if down["n"] <= 6 else [("ok", "recovered")]

    with (
        ScriptedAPI(script) as api,
        Gateway(lambda: LLMClient(_teacher(api.base_url), retry_initial_s=0.05)) as gw,
    ):
        assert _agent_call(gw.base_url, "trial-x", key=gw.issue_token("j")) == "recovered"


def test_failures_reach_the_agent_as_http_errors() -> None:
    with (
        ScriptedAPI(lambda n, body: [("status", 400)]) as api,
        Gateway(lambda: LLMClient(_teacher(api.base_url))) as gw,
        pytest.raises(openai.BadRequestError),
    ):
        _agent_call(gw.base_url, "trial-y", key=gw.issue_token("j"))


def test_the_gateway_answers_only_its_tokens_and_models() -> None:
    """No token, a token it did not issue, or a model nobody configured: refused before
    anything is sent on (the real key pays for nothing)."""
    with (
        ScriptedAPI(lambda n, body: [("ok", "fine")]) as api,
        Gateway(lambda: LLMClient(_teacher(api.base_url)), models=["m-2"]) as gw,
    ):
        key = gw.issue_token("job")
        with pytest.raises(openai.AuthenticationError):
            _agent_call(gw.base_url, "t")
        with pytest.raises(openai.AuthenticationError):
            _agent_call(gw.base_url, "t", key="lc-" + "x" * 32)
        with pytest.raises(openai.PermissionDeniedError, match="not served here"):
            _agent_call(gw.base_url, "t", key=key, model="expensive-model")
        assert api.requests == []
        assert _agent_call(gw.base_url, "t", key=key) == "fine"
        assert _agent_call(gw.base_url, "t", key=key, model="m-2") == "fine"
        assert len(api.requests) == 2
        # Bound to loopback only.
        assert gw.base_url.startswith("http://127.0.0.1:")


def test_trial_tokens_name_their_trial_and_cannot_be_forged() -> None:
    """A trial's token (what an installed agent gets inside its container) is accepted, names
    its trial for the accounts whatever session header it sends, and cannot be made into
    another trial's or the job's."""
    from litecoder.trial_tokens import confine, trial_token

    with (
        ScriptedAPI(lambda n, body: [("ok", "fine", 10, 5)]) as api,
        Gateway(lambda: LLMClient(_teacher(api.base_url))) as gw,
    ):
        job = gw.issue_token("job", "probe")
        mine = confine(f"LLM_API_KEY={job} x", "trial-1")
        assert job not in mine and mine == f"LLM_API_KEY={trial_token(job, 'trial-1')} x"
        token = mine.split("=")[1].split()[0]
        assert _agent_call(gw.base_url, "trial-2", key=token) == "fine"  # header says trial-2
        for forged in (token.replace("trial-1", "trial-2"), token[:-1], "lct-" + "0" * 40 + ".t"):
            with pytest.raises(openai.AuthenticationError):
                _agent_call(gw.base_url, "t", key=forged)
        # x-api-key (how Anthropic-style clients send a key) is read too.
        c = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"Authorization": "", "x-api-key": token},
        )  # fmt: skip
        summary = gw.summary()
    assert set(summary["per_trial"]) == {"trial-1"}  # the token's trial, not the header's
    assert summary["per_trial"]["trial-1"]["calls"] == 2
    assert set(summary["per_agent"]) == {"probe"}  # the job's agent, not the metadata's


@pytest.mark.docker
def test_installed_agents_and_evaluation_reach_the_model_only_through_the_gateway(
    smoke: Path, tmp_path: Path
) -> None:
    """An agent installed in the trial container (Harbor's OpenHands, its loop replaced by one
    request: litecoder.standin.installed_agent) and an evaluation of an endpoint reach the
    model only through the gateway: the container holds its trial's own token, the endpoint
    sees the real key only from the gateway, the key is in no file, and tokens and cost per
    trial are in metrics and the report."""
    from litecoder.pipeline import Paths
    from litecoder.stages.report import usage_rows

    secret = "sk-real-" + "k" * 24
    project = make_project(tmp_path / "p", git=False)
    (t,) = json.loads((smoke / "data/envs/splits.json").read_text())["train"][:1]
    shutil.copytree(smoke / "data/envs" / t, project / "data/envs" / t)
    (project / "data/envs/splits.json").write_text(json.dumps({"train": [t], "heldout": []}))
    shutil.copytree(smoke / "data/envs" / t, tmp_path / "bench" / t)
    done = json.dumps({"analysis": "done", "plan": "done", "commands": [], "task_complete": True})
    model = "litecoder-offline-stand-in"
    env = {"LC_TEST_KEY": secret}
    with ScriptedAPI(lambda n, body: [("ok", done, 100, 20)], models=[model]) as api:
        point_offline_teacher(project, api.base_url)
        run(
            [
                "litecoder", "rollout", "rollout.n_attempts=1", "rollout.network_available=true",
                "rollout.agents=[{name: 'litecoder.standin.installed_agent:OpenHandsProbe', "
                "label: probe, share: 1, needs_network: true}]",
                "models.agent.api_key_env=LC_TEST_KEY",
                "models.agent.price.input_per_mtok=1.0", "models.agent.price.output_per_mtok=2.0",
            ],
            project, env=env, timeout=1800,
        )  # fmt: skip
        run(
            [
                "litecoder", "evaluate", "eval=harbor_dataset", "eval.benchmark=viaproxy",
                "eval.source=path", f"eval.path={tmp_path / 'bench'}", "eval.k=1",
                "eval.model.source=endpoint", f"eval.model.base_url={api.base_url}",
                f"eval.model.name={model}", "eval.model.label=ep",
                "eval.model.api_key_env=LC_TEST_KEY", "eval.model.price.input_per_mtok=1.0",
                "eval.agents=[{name: terminus-2, kwargs: {parser_name: json, max_turns: 4}}]",
            ],
            project, env=env, timeout=1800,
        )  # fmt: skip
        seen = [{k.lower(): v for k, v in h.items()}.get("authorization") for h in api.headers]
    # The endpoint saw the real key only, and only from the gateway.
    assert len(seen) >= 2 and set(seen) == {f"Bearer {secret}"}
    # The installed agent, inside its container, held its own trial's token and got an answer.
    (probe,) = list((project / "data/rollouts").glob("*/*/agent/probe.json"))
    got = json.loads(probe.read_text())
    trial = probe.parent.parent.name
    assert got["status"] == 200 and got["key"].startswith("lct-"), got
    assert got["key"].endswith(f".{trial}") and ":" in got["base_url"]
    rollout = json.loads((project / "metrics/rollout.json").read_text())["llm"]
    assert set(rollout["per_trial"]) == {trial} and rollout["per_agent"]["probe"]["calls"] == 1
    assert rollout["per_trial"][trial]["cost_usd"] == pytest.approx((100 + 20 * 2) / 1e6)
    evaluate = json.loads((project / "metrics/evaluate.json").read_text())["llm"]["ep"]
    assert len(evaluate["per_trial"]) == 1, evaluate
    assert "unknown" not in evaluate["per_trial"] and evaluate["total"]["calls"] >= 1
    # No file anywhere in the project (job dirs, configs, logs, results) holds the key.
    for f in project.rglob("*"):
        if f.is_file() and not f.is_symlink():
            assert secret.encode() not in f.read_bytes(), f
    rows = {r[0] for r in usage_rows(Paths(project))}
    assert {"rollout: probe", "rollout: per trial, mean of 1", "evaluate: ep",
            "evaluate: ep: per trial, max"} <= rows, rows  # fmt: skip


@pytest.mark.docker
def test_rollout_goes_through_the_gateway(smoke: Path, tmp_path: Path) -> None:
    """Several concurrent trials share the teacher's RPM limit (counted at the endpoint);
    tokens and cost per trial and in total land in metrics/rollout.json."""
    project = make_project(tmp_path / "p", git=False)
    train = json.loads((smoke / "data/envs/splits.json").read_text())["train"][:4]
    for t in train:
        shutil.copytree(smoke / "data/envs" / t, project / "data/envs" / t)
    (project / "data/envs/splits.json").write_text(json.dumps({"train": train, "heldout": []}))
    rpm = 60
    with StandIn() as server, FlakyProxy(server.base_url) as proxy:
        point_offline_teacher(project, proxy.base_url)
        run(
            [
                "litecoder",
                "rollout",
                "rollout=terminus2",
                "rollout.n_attempts=1",
                "rollout.n_concurrent=4",
                f"models.agent.limits.requests_per_minute={rpm}",
                "models.agent.price.input_per_mtok=1.0",
                "models.agent.price.output_per_mtok=2.0",
            ],
            project,
            timeout=1800,
        )
        chats = sorted(proxy.times)
    m = json.loads((project / "metrics/rollout.json").read_text())
    llm = m["llm"]
    assert m["trials"] == 4 and len(llm["per_trial"]) == 4
    for trial, u in llm["per_trial"].items():
        assert u["calls"] >= 2 and u["prompt_tokens"] > 0 and u["cost_usd"] > 0, trial
    assert llm["total"]["calls"] == sum(u["calls"] for u in llm["per_trial"].values())
    assert llm["total"]["cost_usd"] == pytest.approx(
        sum(u["cost_usd"] for u in llm["per_trial"].values()), rel=1e-6
    )
    # The limit holds across trials: at most rpm/60 per second, whatever the window.
    posts = [t for t in chats]
    assert len(posts) >= 8
    for i, start in enumerate(posts):
        in_window = sum(1 for t in posts[i:] if t < start + 5)
        assert in_window <= 5 * rpm // 60 + 1, (in_window, rpm)


def test_sigterm_drains_the_gateway_and_exits_0(tmp_path: Path) -> None:
    """`litecoder gateway` told to stop while a request is in flight: the request is answered,
    then the process exits 0 (the run's ledger has the call)."""
    import signal
    import subprocess
    import threading

    project = make_project(tmp_path / "p", git=False)
    with ScriptedAPI(lambda n, body: [("ok", "late answer")], latency_s=3.0) as api:
        point_offline_teacher(project, api.base_url)
        # The scripted server serves any model name the teacher config gives it.
        api.models = ["litecoder-offline-stand-in"]
        proc = subprocess.Popen(
            ["litecoder", "gateway"],
            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        token = proc.stdout.readline().split()[1]
        url = proc.stdout.readline().split()[1]
        got: dict[str, str] = {}

        def ask() -> None:
            got["text"] = _agent_call(url, "t", key=token, model="litecoder-offline-stand-in")

        t = threading.Thread(target=ask)
        t.start()
        while not api.requests:  # the request reached the endpoint: it is in flight
            t.join(0.05)
        proc.send_signal(signal.SIGTERM)
        t.join(60)
        _, err = proc.communicate(timeout=180)
    assert got.get("text") == "late answer"
    assert proc.returncode == 0, err[-2000:]
    spend = run(["litecoder", "spend", "--json"], project).stdout
    assert json.loads(spend)["gateway"]["calls"] == 1

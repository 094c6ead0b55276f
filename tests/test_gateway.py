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

"""The LLM client layer against real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from litecoder.config import Magpie, Price, RateLimits, Teacher
from litecoder.llm import LLMClient, LLMError, ResponseCache, Usage, parse_json_object
from litecoder.standin import StandIn
from tests.loopback_api import ScriptedAPI


def teacher(base_url: str, **kw: Any) -> Teacher:
    args: dict[str, Any] = {
        "name": "t",
        "model": "m",
        "base_url": base_url,
        "timeout_s": 5,
        "max_wait_s": 30,
        "magpie": Magpie(pre_query_template="<u>{system}", stop=["</u>"]),
    }
    args.update(kw)
    return Teacher(**args)


def client(t: Teacher, cache: ResponseCache | None = None, usage: Usage | None = None) -> LLMClient:
    return LLMClient(t, cache=cache, usage=usage, retry_initial_s=0.01, retry_max_s=2)


def test_completion_chat_and_cache(stand_in: StandIn, tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache")
    usage = Usage()

    async def go() -> tuple[Any, ...]:
        meta = {"stage": "sample", "domain": "version_control"}
        async with client(teacher(stand_in.base_url), cache, usage) as c:
            a = await c.complete("<u>any prompt wording", seed=0, meta=meta)
            b = await c.chat([{"role": "user", "content": "hi"}], seed=1, meta=meta)
            # The metadata is not part of the request: the same request is a cache hit.
            a2 = await c.complete("<u>any prompt wording", seed=0, meta={"stage": "other"})
            a3 = await c.complete("<u>any prompt wording", seed=1, meta=meta)
            return a, b, a2, a3

    before = stand_in.stats()["answered"]
    a, b, a2, a3 = asyncio.run(go())
    assert b.text  # chat answered by the stand-in's MAGPIE-chat route
    assert "/app/repo" in a.text and not a.cached
    assert a2.cached and a2.text == a.text and a2.key == a.key
    assert a3.key != a.key  # the seed is part of the request
    assert stand_in.stats()["answered"] - before == 3
    assert usage.calls == 3 and usage.cache_hits == 1 and usage.prompt_tokens > 0


def test_stand_in_answers_only_requests_that_say_what_they_are(stand_in: StandIn) -> None:
    async def go() -> Any:
        async with client(teacher(stand_in.base_url)) as c:
            return await c.chat([{"role": "user", "content": "hi"}])

    with pytest.raises(LLMError, match=r"HTTP 400.*X-Litecoder-Request"):
        asyncio.run(go())


def test_request_metadata_travels_as_a_header() -> None:
    import json

    with ScriptedAPI() as api:

        async def go() -> None:
            async with client(teacher(api.base_url)) as c:
                await c.chat([{"role": "user", "content": "x"}], meta={"stage": "judge"})

        asyncio.run(go())
    headers = {k.lower(): v for k, v in api.headers[0].items()}
    assert json.loads(headers["x-litecoder-request"]) == {"stage": "judge"}


def test_retry_after_is_honoured() -> None:
    script = lambda n, body: [("status", 429, {"Retry-After": "0.6"})] if n == 0 else [("ok", "x")]  # noqa: E731
    usage = Usage()
    with ScriptedAPI(script) as api:
        start = time.monotonic()
        r = asyncio.run(_complete(teacher(api.base_url), usage))
        gap = api.times[1] - api.times[0]
    assert r.text == "x" and usage.retries == 1 and usage.requests == 2
    assert gap >= 0.6 and time.monotonic() - start < 60  # waited, but not a budget's worth


def test_5xx_timeout_and_dropped_connection_are_retried() -> None:
    plan = {
        0: [("status", 502)],
        1: [("sleep", 8), ("ok", "late")],
        2: [("drop",)],
        3: [("empty",)],
        4: [("ok", "finally")],
    }
    usage = Usage()
    with ScriptedAPI(lambda n, body: plan[n]) as api:
        r = asyncio.run(_complete(teacher(api.base_url, timeout_s=4), usage))
    assert r.text == "finally"
    assert usage.retries == 4 and usage.requests == 5 and usage.errors == 0


def test_gives_up_when_its_time_budget_is_spent() -> None:
    """Retries are timed, not counted: an endpoint failing for longer than max_wait_s ends in
    one error line naming the cause, the time and the tries."""
    usage = Usage()
    with ScriptedAPI(lambda n, body: [("status", 503)]) as api:
        start = time.monotonic()
        with pytest.raises(LLMError, match=r"HTTP 503.*gave up after \d+s and \d+ tries") as err:
            asyncio.run(_complete(teacher(api.base_url, max_wait_s=3, timeout_s=2), usage))
        took = time.monotonic() - start
        assert len(api.requests) >= 3
    # The 3 s budget, not the 30 s default (with a margin for a loaded machine).
    assert took < 3 + 60 and err.value.transient and "\n" not in str(err.value)
    assert usage.errors == 1


def test_answers_that_are_not_openai_responses_are_retried() -> None:
    """A 200 whose body is not JSON, not UTF-8 or has no choices: transient, never a crash."""
    plan = {
        0: [("raw", 200, b"<html>gateway error</html>", "text/html")],
        1: [("raw", 200, b"\xff\xfe not utf-8", "application/json")],
        2: [("raw", 200, b'{"id": "x", "object": "chat.completion"}', "application/json")],
        3: [("ok", "good")],
    }
    usage = Usage()
    with ScriptedAPI(lambda n, body: plan[n]) as api:
        r = asyncio.run(_complete(teacher(api.base_url), usage))
    assert r.text == "good" and usage.retries == 3


def test_garbage_forever_is_one_line_not_a_traceback() -> None:
    with ScriptedAPI(lambda n, body: [("raw", 200, b"not json", "text/plain")]) as api:
        out = asyncio.run(_chat_validated(teacher(api.base_url, max_wait_s=2), Usage(), 1))
    assert not out.ok and out.error_kind == "api" and out.error
    assert "not an OpenAI response" in out.error and "\n" not in out.error


def test_an_outage_makes_requests_wait_together() -> None:
    """While the endpoint is down, the circuit breaker lets one probe through at a time
    instead of every request burning its own retries; when it is back, all go through."""
    down_until = time.monotonic() + 4
    usage = Usage()

    def script(n: int, body: dict[str, Any]) -> list[Any]:
        if time.monotonic() < down_until:
            return [("status", 429, {"Retry-After": "0.2"})]
        return [("ok", "back")]

    with ScriptedAPI(script) as api:
        t = teacher(api.base_url, max_wait_s=60)
        rs = asyncio.run(_many(t, 40, usage))
        during = sum(1 for x in api.times if x < down_until)
    assert all(r.text == "back" for r in rs) and usage.errors == 0
    # 40 requests, 4 s down: without the breaker each would retry every ~0.2 s (~800 tries).
    assert during < 120, during


def test_truncated_answers_are_invalid_output() -> None:
    answers = [("ok", '{"answer": 4', 10, 2048, "length"), ("ok", '{"answer": 42}')]
    usage = Usage()
    with ScriptedAPI(lambda n, body: [answers[n]]) as api:
        out = asyncio.run(_chat_validated(teacher(api.base_url), usage, max_reasks=1))
        reask = api.requests[1]["messages"][-1]["content"]
    assert out.ok and out.value == {"answer": 42} and usage.truncated == 1
    assert "cut off at max_tokens" in reask
    with ScriptedAPI(lambda n, body: [("ok", '{"a": 1}', 10, 2048, "length")]) as api:
        out = asyncio.run(_chat_validated(teacher(api.base_url), Usage(), max_reasks=0))
    assert not out.ok and out.error_kind == "invalid_output" and "cut off" in (out.error or "")


def test_spending_guard_stops_requests() -> None:
    from litecoder.llm import Limit, UsageBook

    # Each call costs $0.002; its worst case (every prompt byte a token, 2048 answer tokens at
    # $2 per million) about $0.0041: a second call could pass $0.005, so it is not sent.
    book = UsageBook(stage_limit=Limit(max_cost_usd=0.005))
    with ScriptedAPI(lambda n, body: [("ok", "x", 1000, 500)]) as api:
        t = teacher(api.base_url, price=Price(input_per_mtok=1.0, output_per_mtok=2.0))

        async def go() -> list[Any]:
            usage = book.for_teacher("t")
            async with LLMClient(t, usage=usage, book=book) as c:
                out = []
                for i in range(5):
                    try:
                        out.append(await c.complete(f"p{i}", seed=i))
                    except LLMError as e:
                        out.append(e)
                return out

        out = asyncio.run(go())
    assert [isinstance(o, LLMError) for o in out] == [False, True, True, True, True]
    err = out[1]
    assert isinstance(err, LLMError) and err.budget and "max_cost_usd" in str(err)
    assert len(api.requests) == 1 and book.total().cost_usd <= 0.005


@pytest.mark.parametrize(
    "case, expected",
    [
        ("refused", "connection refused"),
        ("dns", "cannot resolve the host name"),
        ("not_openai", "not an OpenAI-compatible server"),
        ("bad_key", "refused the API key"),
        ("wrong_model", "is not served"),
    ],
)
def test_preflight_names_the_cause_quickly(
    case: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiohttp import web

    from litecoder.llm import EndpointError

    async def check(t: Teacher) -> None:
        t = t.model_copy(update={"max_wait_s": 3600})  # retrying would take an hour
        async with LLMClient(t) as c:
            await c.preflight()

    async def not_implemented(_: web.Request) -> web.Response:
        return web.Response(status=501, text="no")

    def other_server() -> Any:  # an HTTP server that is not an OpenAI one
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", not_implemented)
        return app

    start = time.monotonic()
    with pytest.raises(EndpointError, match=expected):
        if case == "refused":
            asyncio.run(check(teacher("http://127.0.0.1:1/v1")))
        elif case == "dns":
            asyncio.run(check(teacher("http://no-such-host.invalid/v1")))
        elif case == "not_openai":
            import socket
            import threading

            loop = asyncio.new_event_loop()
            runner = web.AppRunner(other_server())
            loop.run_until_complete(runner.setup())
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
            threading.Thread(target=loop.run_forever, daemon=True).start()
            asyncio.run(check(teacher(f"http://127.0.0.1:{port}/v1")))
        elif case == "bad_key":
            monkeypatch.setenv("LC_PF_KEY", "sk-right")
            with StandIn(api_key_env="LC_PF_KEY") as server:
                monkeypatch.setenv("LC_PF_KEY", "sk-wrong")
                asyncio.run(check(teacher(server.base_url, api_key_env="LC_PF_KEY")))
        else:
            with ScriptedAPI(models=["other-model"]) as api:
                asyncio.run(check(teacher(api.base_url, model="m")))
    assert time.monotonic() - start < 120  # not retried (a margin for a loaded machine)


def test_client_errors_are_not_retried() -> None:
    with ScriptedAPI(lambda n, body: [("status", 400)]) as api:
        with pytest.raises(LLMError, match="HTTP 400"):
            asyncio.run(_complete(teacher(api.base_url)))
        assert len(api.requests) == 1


def test_reask_feeds_the_error_back() -> None:
    answers = ["not json at all", '{"answer": 42}']
    usage = Usage()
    with ScriptedAPI(lambda n, body: [("ok", answers[n])]) as api:
        out = asyncio.run(_chat_validated(teacher(api.base_url), usage, max_reasks=2))
        second = api.requests[1]["messages"]
    assert out.ok and out.value == {"answer": 42} and out.attempts == 2
    assert second[-2] == {"role": "assistant", "content": "not json at all"}
    assert "no JSON object" in second[-1]["content"]
    assert usage.reasks == 1


def test_reasks_are_bounded_and_failure_is_kept() -> None:
    with ScriptedAPI(lambda n, body: [("ok", '{"answer": ')]) as api:
        out = asyncio.run(_chat_validated(teacher(api.base_url), Usage(), max_reasks=2))
        assert len(api.requests) == 3
    assert not out.ok and out.error_kind == "invalid_output" and out.attempts == 3
    assert "bad JSON" in (out.error or "") and out.text == '{"answer": '


def test_concurrency_is_bounded() -> None:
    t = teacher("", limits=RateLimits(concurrency=3))
    with ScriptedAPI(latency_s=0.15) as api:
        t = t.model_copy(update={"base_url": api.base_url})
        asyncio.run(_many(t, 20))
        assert api.max_inflight == 3 and len(api.requests) == 20


def test_requests_per_minute_limit() -> None:
    with ScriptedAPI() as api:
        t = teacher(api.base_url, limits=RateLimits(concurrency=50, requests_per_minute=300))
        start = time.monotonic()
        asyncio.run(_many(t, 15))
        elapsed = time.monotonic() - start
    # 300/min = 5/s: after a bucket of 5, the other 10 need two more seconds.
    assert elapsed >= 1.8


def test_tokens_per_minute_limit() -> None:
    with ScriptedAPI() as api:
        # Each request is estimated at len(prompt)/4 + max_tokens = ~100 tokens; 6000/min = 100/s.
        t = teacher(
            api.base_url,
            limits=RateLimits(concurrency=50, tokens_per_minute=6000),
            sampling={"max_tokens": 96},
        )
        start = time.monotonic()
        asyncio.run(_many(t, 4))
        elapsed = time.monotonic() - start
    assert elapsed >= 2.5


def test_identical_requests_in_flight_share_one_call() -> None:
    usage = Usage()
    with ScriptedAPI(latency_s=0.2) as api:
        t = teacher(api.base_url)

        async def go() -> list[Any]:
            async with client(t, usage=usage) as c:
                return await asyncio.gather(*(c.complete("same", seed=7) for _ in range(5)))

        rs = asyncio.run(go())
        assert len(api.requests) == 1
    assert len({r.text for r in rs}) == 1 and usage.cache_hits == 4


def test_cost_accounting() -> None:
    usage = Usage()
    with ScriptedAPI(lambda n, body: [("ok", "x", 1000, 500)]) as api:
        t = teacher(api.base_url, price=Price(input_per_mtok=1.0, output_per_mtok=2.0))
        asyncio.run(_many(t, 3, usage))
    assert usage.prompt_tokens == 3000 and usage.completion_tokens == 1500
    assert usage.cost_usd == pytest.approx(0.006)


def test_api_key_read_from_env_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LC_TEST_KEY", "sk-right")
    with StandIn(api_key_env="LC_TEST_KEY") as server:
        t = teacher(server.base_url, api_key_env="LC_TEST_KEY")
        assert asyncio.run(_complete(t)).text
        monkeypatch.setenv("LC_TEST_KEY", "sk-wrong")
        with pytest.raises(LLMError, match="HTTP 401"):
            asyncio.run(_complete(t))


def test_cache_is_safe_for_concurrent_processes(tmp_path: Path) -> None:
    """Eight writers at once (as on a cluster's shared file system), each also reading what
    the others wrote while they write, some answers written twice: every answer is kept and
    readable, and a writer killed mid-line loses only that line."""
    code = (
        "import sys, random; from pathlib import Path; from litecoder.llm import ResponseCache\n"
        "c = ResponseCache(Path(sys.argv[1])); tag = sys.argv[2]\n"
        "for i in range(400):\n"
        "    pad = 'x' * random.randint(0, 5000)\n"
        "    c.put(f'{tag}-{i}', 'chat', 'm', {'i': i, 'tag': tag, 'pad': pad})\n"
        "    c.put(f'shared-{i % 50}', 'chat', 'm', {'i': i % 50, 'tag': 'shared'})\n"
        "    other = f'w{(int(tag[1:]) + 1) % 8}-{i // 2}'\n"
        "    got = c.get(other)\n"
        "    assert got is None or got['tag'] == other.split('-')[0], got\n"
    )
    cache_dir = tmp_path / "cache"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(cache_dir), f"w{k}"]) for k in range(8)
    ]
    assert [p.wait(120) for p in procs] == [0] * 8
    # A writer killed mid-line: its partial last line is skipped, never fatal.
    with (cache_dir / "dead-writer.jsonl").open("w") as f:
        f.write('{"key": "dead-1", "kind": "chat", "model": "m", "response": {"i": 1}}\n')
        f.write('{"key": "dead-2", "kind": "chat", "mod')
    cache = ResponseCache(cache_dir)
    keys = cache.keys()
    assert len(keys) == 8 * 400 + 50 + 1 and "dead-2" not in keys
    for k in range(8):
        for i in (0, 199, 399):
            assert cache.get(f"w{k}-{i}")["tag"] == f"w{k}"  # type: ignore[index]
    assert cache.get("shared-7") == {"i": 7, "tag": "shared"}


def test_parse_json_object() -> None:
    assert parse_json_object('Here: ```json\n{"a": {"b": 1}}\n``` done') == {"a": {"b": 1}}
    for bad in ["", "[1, 2]", '{"a": 1']:
        with pytest.raises(ValueError):
            parse_json_object(bad)


# --- helpers --------------------------------------------------------------------------------


async def _complete(t: Teacher, usage: Usage | None = None) -> Any:
    async with client(t, usage=usage) as c:
        return await c.complete("prompt", seed=1, meta={"stage": "sample"})


async def _chat_validated(t: Teacher, usage: Usage, max_reasks: int) -> Any:
    async with client(t, usage=usage) as c:
        return await c.chat_validated(
            [{"role": "user", "content": "answer in JSON"}],
            parse_json_object,
            max_reasks=max_reasks,
        )


async def _many(t: Teacher, n: int, usage: Usage | None = None) -> list[Any]:
    async with client(t, usage=usage) as c:
        return list(await asyncio.gather(*(c.complete(f"p{i}", seed=i) for i in range(n))))


def test_a_silent_server_is_named_and_cut_at_the_time_budget() -> None:
    """A server that accepts connections and never answers: "no answer in N s", never
    "cannot connect"; a call ends when max_wait_s does, not a whole timeout_s later."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    t = teacher(f"http://127.0.0.1:{srv.getsockname()[1]}/v1", timeout_s=4, max_wait_s=6)

    async def go() -> tuple[str, str, float]:
        from litecoder.llm import EndpointError

        async with LLMClient(t, retry_initial_s=0.05) as c:
            try:
                await c.preflight(timeout_s=1)
                pre = ""
            except EndpointError as e:
                pre = str(e)
            start = time.monotonic()
            try:
                await c.chat([{"role": "user", "content": "hello?"}])
                call = ""
            except LLMError as e:
                call = str(e)
            return pre, call, time.monotonic() - start

    try:
        pre, call, took = asyncio.run(go())
    finally:
        srv.close()
    assert pre.endswith("no answer in 1 s") and "cannot connect" not in pre
    # The attempt in flight was cut when the 6 s ran out (only that path says so), not left
    # to run its whole 4 s timeout past the budget; the earlier one said why it failed.
    assert "no answer before max_wait_s 6 ran out" in call and "no answer in 4 s" in call
    assert "cannot connect" not in call and took >= 6

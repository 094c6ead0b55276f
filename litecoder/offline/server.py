"""The offline stand-in teacher: an OpenAI-compatible HTTP server on loopback.

It is NOT a model. It answers `/v1/completions` and `/v1/chat/completions` with scripted,
deterministic output from `litecoder.offline.scenarios` so the pipeline runs with no
endpoint: MAGPIE task texts (domain recognised from the system message), judge verdicts in
the judge's JSON format, and the turns of the scripted agents registered in `ROUTES`.
It counts requests (`GET /_stand_in/stats`) and injects faults on demand (429 with
Retry-After, 500, slow answers, dropped connections, malformed output, empty choices).

    python -m litecoder.offline.server --port 0 [--fault-rate 0.2] [--latency 0.1]

prints `READY <base_url>` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from litecoder.llm import REASK_SEED_STRIDE, request_key
from litecoder.offline import agents
from litecoder.offline import scenarios as S

MODEL_ID = "litecoder-offline-stand-in"
FAULT_KINDS = ("429", "500", "slow", "drop", "malformed", "empty")


@dataclass
class Options:
    latency_s: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    slow_s: float = 30.0
    retry_after_s: float = 0.05
    seed: int = 0
    api_key: str | None = None  # like `vllm serve --api-key`: other bearers get 401


@dataclass
class Stats:
    received: Counter[str] = field(default_factory=Counter)  # by endpoint
    answered: Counter[str] = field(default_factory=Counter)  # 200s by endpoint
    faults: Counter[str] = field(default_factory=Counter)
    by_key: Counter[str] = field(default_factory=Counter)  # 200s by request key
    by_route: Counter[str] = field(default_factory=Counter)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _messages_text(messages: list[dict[str, Any]], role: str | None = None) -> str:
    parts = []
    for m in messages:
        if role and m.get("role") != role:
            continue
        c = m.get("content")
        if isinstance(c, list):
            c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
        parts.append(str(c or ""))
    return "\n".join(parts)


# --- scripted answers ----------------------------------------------------------------------


def magpie_task(system_text: str, seed: int) -> str:
    pool = S.POOLS.get(S.domain_of(system_text)) or S.POOLS["*"]
    _, text = pool[(seed % REASK_SEED_STRIDE) % len(pool)]
    return text


_CRITERION_LINE = re.compile(r"^\s*[-*]\s*([a-z_][a-z0-9_]*)\s*:", re.M)


def judge_verdict(messages: list[dict[str, Any]]) -> str:
    user = _messages_text(messages, "user")
    scen = S.find(user)
    names = _CRITERION_LINE.findall(user) or list(S.GOOD)
    scores = scen.scores if scen else S.GOOD
    verdict = {
        "scores": {
            n: {"score": scores[n][0], "reason": scores[n][1]}
            if n in scores
            else {"score": 4, "reason": "Acceptable on this criterion."}
            for n in names
        },
        "summary": "Scripted verdict of the offline stand-in"
        + (f" for scenario {scen.id}." if scen else " for an unknown task."),
    }
    return json.dumps(verdict)


# A route answers chat requests it recognises: (name, matches(messages), answer(messages, body)).
Route = tuple[
    str,
    Callable[[list[dict[str, Any]]], bool],
    Callable[[list[dict[str, Any]], dict[str, Any]], str],
]
ROUTES: list[Route] = [
    ("judge", lambda m: '"scores"' in _messages_text(m, "user"), lambda m, b: judge_verdict(m)),
    *agents.ROUTES,
]


def chat_answer(messages: list[dict[str, Any]], body: dict[str, Any]) -> tuple[str, str]:
    for name, matches, answer in ROUTES:
        if matches(messages):
            return name, answer(messages, body)
    # Chat-mode MAGPIE: a domain system message and a request to write a task.
    return "magpie_chat", magpie_task(
        _messages_text(messages, "system"), int(body.get("seed") or 0)
    )


# --- HTTP ----------------------------------------------------------------------------------


def build_app(opts: Options) -> web.Application:
    stats = Stats()
    rng = random.Random(opts.seed)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app["stats"] = stats

    def pick_fault() -> str | None:
        if opts.fault_rate > 0 and rng.random() < opts.fault_rate:
            return rng.choice(opts.faults)
        return None

    async def fault_response(request: web.Request, kind: str) -> web.StreamResponse | None:
        stats.faults[kind] += 1
        if kind == "429":
            return web.json_response(
                {"error": {"message": "rate limited (stand-in fault)", "type": "rate_limit"}},
                status=429,
                headers={"Retry-After": str(opts.retry_after_s)},
            )
        if kind == "500":
            return web.json_response(
                {"error": {"message": "internal error (stand-in fault)"}}, status=500
            )
        if kind == "slow":
            await asyncio.sleep(opts.slow_s)
            return None  # then answers normally, if the client is still there
        if kind == "drop":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # nothing more to write on a closed connection
        return None  # malformed / empty are shaped by the handler

    async def handle(request: web.Request, kind: str) -> web.StreamResponse:
        stats.received[kind] += 1
        if opts.api_key and request.headers.get("Authorization") != f"Bearer {opts.api_key}":
            stats.faults["401"] += 1
            return web.json_response({"error": {"message": "invalid API key"}}, status=401)
        body = await request.json()
        fault = pick_fault()
        if fault:
            resp = await fault_response(request, fault)
            if resp is not None:
                return resp
        if opts.latency_s:
            await asyncio.sleep(opts.latency_s)
        now = int(time.time())
        if kind == "completion":
            route = "magpie"
            prompt = body.get("prompt") or ""
            prompt = prompt if isinstance(prompt, str) else str(prompt[0])
            text = magpie_task(prompt, int(body.get("seed") or 0))
            if fault == "malformed":
                text = ""  # an unusable completion
            prompt_tokens = _tokens(prompt)
        else:
            msgs = body.get("messages") or []
            route, text = chat_answer(msgs, body)
            if fault == "malformed":
                text = text[: max(1, len(text) // 3)]  # truncated mid-JSON
            prompt_tokens = _tokens(_messages_text(msgs))
        stats.by_route[route] += 1
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if kind == "completion":
            choice["text"] = text
        else:
            choice["message"] = {"role": "assistant", "content": text}
        payload = {
            "id": f"standin-{stats.received[kind]}",
            "object": "text_completion" if kind == "completion" else "chat.completion",
            "created": now,
            "model": body.get("model") or MODEL_ID,
            "system_fingerprint": MODEL_ID,
            "choices": [] if fault == "empty" else [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": _tokens(text),
                "total_tokens": prompt_tokens + _tokens(text),
            },
        }
        stats.answered[kind] += 1
        stats.by_key[request_key(kind, body)] += 1
        return web.json_response(payload)

    async def completions(request: web.Request) -> web.StreamResponse:
        return await handle(request, "completion")

    async def chat(request: web.Request) -> web.StreamResponse:
        return await handle(request, "chat")

    async def models(_: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": MODEL_ID, "object": "model", "owned_by": "litecoder"}],
            }
        )

    async def get_stats(_: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "received": sum(stats.received.values()),
                "answered": sum(stats.answered.values()),
                "by_endpoint": dict(stats.received),
                "faults": dict(stats.faults),
                "by_route": dict(stats.by_route),
                "by_key": dict(stats.by_key),
            }
        )

    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/_stand_in/stats", get_stats)
    return app


async def _serve(host: str, port: int, opts: Options) -> None:
    runner = web.AppRunner(build_app(opts), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"READY http://{host}:{bound}/v1", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="litecoder offline stand-in teacher (not a model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--faults", default=",".join(FAULT_KINDS))
    p.add_argument("--slow-s", type=float, default=30.0)
    p.add_argument("--retry-after", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key-env", default=None, help="require this env var's value as bearer")
    a = p.parse_args(argv)
    kinds = tuple(k for k in a.faults.split(",") if k)
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        p.error(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
    key = os.environ.get(a.api_key_env) if a.api_key_env else None
    opts = Options(a.latency, a.fault_rate, kinds, a.slow_s, a.retry_after, a.seed, key)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(a.host, a.port, opts))


if __name__ == "__main__":
    main()

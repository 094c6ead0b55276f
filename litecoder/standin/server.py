"""The offline stand-in teacher: an OpenAI-compatible HTTP server on loopback.

It is NOT a model. It answers `/v1/completions` and `/v1/chat/completions` with scripted,
deterministic output from its scenarios (`litecoder/standin/scenarios/`, data) so the pipeline
runs with no endpoint. What a request asks for comes from the metadata litecoder sends on
purpose in the `X-Litecoder-Request` header (JSON: stage, step, turn, task id, domain, seed,
criteria, agent parser); which scenario it is about, from the scenario's own task text in the
request. It never reads the wording of a prompt: prompts in conf/ can say anything.
Answers: MAGPIE task texts, judge verdicts (JSON), envprep agent turns and Terminus-2 turns.
It counts requests (`GET /_stand_in/stats`) and injects faults on demand (429 with
Retry-After, 500, slow answers, dropped connections, malformed output, empty choices), and
answers in the shapes real teachers use (`--shape`: reasoning in a `<think>` block or in
`reasoning_content`, fenced JSON, a draft object first, prose after; `shapes.yaml`, data).

    python -m litecoder.standin.server --port 0 [--fault-rate 0.2] [--latency 0.1] [--shape think]

prints `READY <base_url>` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from litecoder.llm import META_HEADER, REASK_SEED_STRIDE, request_key
from litecoder.standin import agents
from litecoder.standin import library as S

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
    shape: str | None = None  # a shape of shapes.yaml: how answers are wrapped, per route


def load_shapes() -> dict[str, dict[str, dict[str, str]]]:
    from importlib import resources

    import yaml

    text = resources.files("litecoder.standin").joinpath("shapes.yaml").read_text()
    return {k: v for k, v in yaml.safe_load(text).items() if isinstance(v, dict)}


def shaped(shape: dict[str, str] | None, text: str) -> tuple[str, str | None]:
    """(content, reasoning_content) of an answer in a shape."""
    if not shape:
        return text, None
    if "think" in shape:
        return f"<think>\n{shape['think']}\n</think>\n\n{text}", None
    if "think_closing_only" in shape:
        return f"{shape['think_closing_only']}\n</think>\n\n{text}", None
    if "reasoning_content" in shape:
        return text, shape["reasoning_content"]
    return f"{shape.get('before', '')}{text}{shape.get('after', '')}", None


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


def magpie_task(domain: str, seed: int) -> str:
    pools = S.pools()
    pool = pools.get(domain) or pools["*"]
    _, text = pool[(seed % REASK_SEED_STRIDE) % len(pool)]
    return text


def judge_verdict(messages: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    scen = S.find(_messages_text(messages, "user"))
    names = list(meta.get("criteria") or S.defaults())
    scores = scen.scores if scen else S.defaults()
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


class Unrecognised(Exception):
    """A request without litecoder's metadata: the stand-in answers litecoder only."""


def answer(kind: str, body: dict[str, Any], meta: dict[str, Any]) -> tuple[str, str]:
    """(route, text) for a request, by what its metadata says it is."""
    stage = meta.get("stage")
    seed = int(body.get("seed") or 0)
    msgs = body.get("messages") or []
    if stage == "sample":
        return "magpie" if kind == "completion" else "magpie_chat", magpie_task(
            str(meta.get("domain") or "*"), seed
        )
    if kind == "chat" and stage == "judge":
        return "judge", judge_verdict(msgs, meta)
    if kind == "chat" and stage == "envprep":
        return "envprep", agents.envprep_answer(msgs, meta)
    if kind == "chat" and stage in ("rollout", "calibrate"):
        return "terminus", agents.terminus_answer(msgs, meta, body)
    raise Unrecognised(
        f"the offline stand-in answers litecoder's own requests only: no usable {META_HEADER} "
        f"header (got {meta or 'none'})"
    )


# --- HTTP ----------------------------------------------------------------------------------


def build_app(opts: Options) -> web.Application:
    stats = Stats()
    shapes = load_shapes()[opts.shape] if opts.shape else {}
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
        try:
            meta = json.loads(request.headers.get(META_HEADER) or "{}")
            route, text = answer(kind, body, meta if isinstance(meta, dict) else {})
        except (Unrecognised, json.JSONDecodeError) as e:
            stats.faults["unrecognised"] += 1
            return web.json_response({"error": {"message": str(e)}}, status=400)
        if fault == "malformed":
            # An unusable completion; a chat answer cut mid-JSON.
            text = "" if kind == "completion" else text[: max(1, len(text) // 3)]
        prompt = body.get("prompt") or ""
        prompt = prompt if isinstance(prompt, str) else str(prompt[0])
        prompt_tokens = _tokens(
            prompt if kind == "completion" else _messages_text(body.get("messages") or [])
        )
        stats.by_route[route] += 1
        text, reasoning = shaped(shapes.get(route), text)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if kind == "completion":
            choice["text"] = text
        else:
            choice["message"] = {"role": "assistant", "content": text}
            if reasoning is not None:
                choice["message"]["reasoning_content"] = reasoning
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

    async def models(request: web.Request) -> web.StreamResponse:
        if opts.api_key and request.headers.get("Authorization") != f"Bearer {opts.api_key}":
            return web.json_response({"error": {"message": "invalid API key"}}, status=401)
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
    p.add_argument("--shape", default=None, help="answer as real teachers do (shapes.yaml)")
    a = p.parse_args(argv)
    if a.shape and a.shape not in load_shapes():
        p.error(f"unknown shape {a.shape!r}; known: {sorted(load_shapes())}")
    kinds = tuple(k for k in a.faults.split(",") if k)
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        p.error(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
    key = os.environ.get(a.api_key_env) if a.api_key_env else None
    opts = Options(a.latency, a.fault_rate, kinds, a.slow_s, a.retry_after, a.seed, key, a.shape)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(a.host, a.port, opts))


if __name__ == "__main__":
    main()

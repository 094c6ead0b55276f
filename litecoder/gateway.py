"""The gateway: a local OpenAI-compatible proxy that puts Harbor's agents behind litecoder's
client layer.

During a rollout every agent's LLM call goes to this server on loopback, which forwards it
through one `LLMClient` of the teacher: its concurrency and requests/tokens-per-minute limits
are shared by all concurrent trials, an outage makes calls wait (circuit breaker, time
budget) instead of failing trials, the spending guard applies, and every call's tokens and
cost are counted per trial and per agent. The agents get the gateway as their `api_base`; the
real API key stays in this process. Streaming requests are streamed through. Agent requests
are never served from the response cache: two trials asking the same thing must each get
their own sample.

Trials are told apart by their token (an installed agent's trial token names its trial) or
by the `X-Litecoder-Session` header (Terminus-2's `session_id_headers`: Harbor names the agent
session after the trial); agents by the job token's agent or the request metadata header.

It answers only who it was started for: it listens on loopback (where Harbor's own agents run)
and, with `container_host`, on the host's address on Docker's bridge (where agents installed
in a trial container reach it); every request must carry a token it issued (one per Harbor
job: `issue_token`, or a trial's token derived from it, see litecoder.trial_tokens) as a
bearer token or `x-api-key`; and only the configured model names are forwarded (the real key
never pays for a model nobody configured).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from litecoder.llm import META_HEADER, LLMClient, LLMError, Usage, split_reasoning
from litecoder.trial_tokens import job_token, trial_of

log = logging.getLogger(__name__)
SESSION_HEADER = "X-Litecoder-Session"


@dataclass
class Accounts:
    """Usage per trial and per agent (the gateway's thread writes, the stage reads at the end)."""

    by_trial: dict[str, Usage] = field(default_factory=dict)
    by_agent: dict[str, Usage] = field(default_factory=dict)
    trial_agent: dict[str, str] = field(default_factory=dict)

    def add(self, trial: str, agent: str, raw: dict[str, Any], price: Any) -> None:
        usage = raw.get("usage") or {}
        u = Usage(
            requests=1,  # as the agent saw it (the client's retries are in its own total)
            calls=1,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
        u.cost_usd = (
            u.prompt_tokens * price.input_per_mtok + u.completion_tokens * price.output_per_mtok
        ) / 1e6
        self.by_trial.setdefault(trial, Usage()).add(u)
        self.by_agent.setdefault(agent, Usage()).add(u)
        self.trial_agent[trial] = agent


class Gateway:
    """Start with `with Gateway(make_client) as gw:`; agents use `gw.base_url`."""

    def __init__(
        self,
        make_client: Callable[[], LLMClient],
        *,
        port: int = 0,
        models: Iterable[str] = (),
        drain_s: float = 120.0,
        container_host: str | None = None,
    ):
        self.make_client = make_client
        self.drain_s = drain_s
        self.port = port
        self.extra_models = set(models)  # beside the teacher's own
        self.tokens: dict[str, tuple[str, str | None]] = {}  # token -> (job label, agent)
        self.container_host = container_host
        self.base_url = ""
        self.container_url = ""  # for agents inside trial containers (with container_host)
        self.accounts = Accounts()
        self.client: LLMClient | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def issue_token(self, label: str, agent: str | None = None) -> str:
        """A token for one job's agents (their API key); `agent` names who spends with it."""
        token = job_token()
        self.tokens[token] = (label, agent)
        return token

    def _caller(self, request: web.Request) -> tuple[str | None, str | None] | web.Response:
        """(trial, agent) the request's token speaks for (either may be unknown), or a 401."""
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or request.headers.get("x-api-key", "")
        if token in self.tokens:
            return None, self.tokens[token][1]
        if found := trial_of(token, self.tokens):
            return found[1], self.tokens[found[0]][1]
        return _error(401, "no valid litecoder gateway token")

    def _model_refused(self, body: dict[str, Any]) -> web.Response | None:
        assert self.client is not None
        model = str(body.get("model") or "")
        allowed = {self.client.teacher.model, *self.extra_models}
        if model not in allowed:
            return _error(403, f"model {model!r} is not served here (only {sorted(allowed)})")
        return None

    # -- HTTP --

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completion)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _models(self, request: web.Request) -> web.StreamResponse:
        assert self.client is not None
        if isinstance(caller := self._caller(request), web.Response):
            return caller
        model = self.client.teacher.model
        return web.json_response({"object": "list", "data": [{"id": model, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, "chat")

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, "completion")

    async def _forward(self, request: web.Request, kind: Any) -> web.StreamResponse:
        assert self.client is not None
        if isinstance(caller := self._caller(request), web.Response):
            return caller
        token_trial, token_agent = caller
        try:
            body = await request.json()
            meta = json.loads(request.headers.get(META_HEADER) or "{}") or {}
        except ValueError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body is not a JSON object")
        if refused := self._model_refused(body):
            return refused
        # The token's word over the headers: a trial cannot spend as another trial.
        trial = token_trial or request.headers.get(SESSION_HEADER, "unknown").removesuffix(
            "__agent"
        )
        agent = token_agent or str(meta.get("agent") or "unknown")
        meta = {**meta, "trial": trial}
        if body.get("stream"):
            return await self._stream(request, kind, body, meta, trial, agent)
        try:
            resp = await self.client.forward(kind, body, meta)
        except LLMError as e:
            return _error(429 if e.budget else 503 if e.transient else 400, str(e))
        assert resp.raw is not None
        self.accounts.add(trial, agent, resp.raw, self.client.teacher.price)
        if kind == "chat":
            reasoning_apart(resp.raw)
        return web.Response(body=json.dumps(resp.raw).encode(), content_type="application/json")

    async def _stream(
        self, request: web.Request, kind: Any, body: dict[str, Any], meta: dict[str, Any],
        trial: str, agent: str,
    ) -> web.StreamResponse:  # fmt: skip
        assert self.client is not None
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        started = False
        try:
            async for chunk in self.client.stream(kind, body, meta):
                if not started:
                    await out.prepare(request)
                    started = True
                if chunk.get("usage"):
                    self.accounts.add(trial, agent, chunk, self.client.teacher.price)
                await out.write(f"data: {json.dumps(chunk)}\n\n".encode())
        except LLMError as e:
            if not started:
                return _error(429 if e.budget else 503 if e.transient else 400, str(e))
            await out.write(f"data: {json.dumps({'error': {'message': str(e)}})}\n\n".encode())
        if not started:
            await out.prepare(request)
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out

    # -- lifecycle --

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> web.AppRunner:
            self.client = self.make_client()
            # On exit the requests in flight are answered first (up to drain_s).
            runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=self.drain_s)
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024)
                await site.start()
            except OSError:  # the preferred port is taken
                site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
                await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.base_url = f"http://127.0.0.1:{port}/v1"
            if self.container_host:
                # The same port on the bridge address, for agents inside the containers.
                await web.TCPSite(runner, self.container_host, port, backlog=1024).start()
                self.container_url = f"http://{self.container_host}:{port}/v1"
            return runner

        try:
            self._runner = self._loop.run_until_complete(start())
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Gateway:
        self._thread = threading.Thread(target=self._serve, name="litecoder-gateway", daemon=True)
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        log.info("agents reach the teacher through the gateway at %s", self.base_url)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            if self.client is not None:
                await self.client.aclose()

        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(stop(), self._loop).result(self.drain_s + 30)
            except TimeoutError:
                log.warning("the gateway stopped with requests still in flight")
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def summary(self) -> dict[str, Any]:
        """Tokens and cost in total, per agent and per trial (for metrics/rollout.json)."""
        total = Usage()
        for u in self.accounts.by_agent.values():
            total.add(u)
        gate = self.client.usage.to_dict() if self.client else {}
        return {
            "total": {
                **total.to_dict(),
                **{k: gate.get(k) for k in ("requests", "retries", "errors", "waited_outage_s")},
            },
            "per_agent": {k: v.to_dict() for k, v in sorted(self.accounts.by_agent.items())},
            "per_trial": {
                k: {"agent": self.accounts.trial_agent.get(k), **v.to_dict()}
                for k, v in sorted(self.accounts.by_trial.items())
            },
        }


def reasoning_apart(raw: dict[str, Any]) -> None:
    """A reasoning model's inline `<think>` block moved to the message's `reasoning_content`
    (where agents and Harbor's trajectories keep reasoning), so the agent reads its commands
    from the answer alone."""
    for choice in raw.get("choices") or []:
        msg = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            continue
        answer, reasoning = split_reasoning(msg["content"])
        if reasoning:
            msg["content"] = answer
            before = msg.get("reasoning_content")
            msg["reasoning_content"] = f"{before}\n\n{reasoning}" if before else reasoning


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "litecoder_gateway"}}, status=status
    )

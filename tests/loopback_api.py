"""A loopback OpenAI-protocol server whose answers each test scripts (a stand-in for a paid
model API: real HTTP, so the real `openai` client, its retries and timeouts are exercised)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# An action: ("ok", text) | ("ok", text, prompt_tokens, completion_tokens[, finish_reason]) |
# ("status", code, headers) | ("sleep", seconds) then the next action | ("drop",) | ("empty",) |
# ("raw", status, body bytes, content type): anything at all, e.g. a body that is not JSON
Action = tuple[Any, ...]


@dataclass
class ScriptedAPI:
    script: Callable[[int, dict[str, Any]], list[Action]] = lambda n, body: [("ok", "hello")]
    latency_s: float = 0.0
    models: list[str] = field(default_factory=lambda: ["m"])  # GET /v1/models
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    inflight: int = 0
    max_inflight: int = 0
    base_url: str = ""

    def __enter__(self) -> ScriptedAPI:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def stream(
            request: web.Request, body: dict[str, Any], action: Action
        ) -> web.StreamResponse:
            """The answer as server-sent events: two pieces of text, then the usage."""
            text = action[1]
            pt, ct = (action[2], action[3]) if len(action) > 3 else (10, 5)
            out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            base = {"id": "s", "object": "chat.completion.chunk", "created": 0, "model": "m"}
            half = len(text) // 2
            for piece in (text[:half], text[half:]):
                chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece}}]}
                await out.write(f"data: {json.dumps(chunk)}\n\n".encode())
            last = {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            await out.write(f"data: {json.dumps(last)}\n\n".encode())
            usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
            await out.write(
                f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
            )
            await out.write(b"data: [DONE]\n\n")
            return out

        async def models(request: web.Request) -> web.StreamResponse:
            data = [{"id": m, "object": "model", "owned_by": "test"} for m in self.models]
            return web.json_response({"object": "list", "data": data})

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            n = len(self.requests)
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            self.times.append(time.monotonic())
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            try:
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                for action in self.script(n, body):
                    kind = action[0]
                    if kind == "sleep":
                        await asyncio.sleep(action[1])
                    elif kind == "status":
                        return web.json_response(
                            {"error": {"message": f"scripted {action[1]}"}},
                            status=action[1],
                            headers=action[2] if len(action) > 2 else None,
                        )
                    elif kind == "raw":
                        return web.Response(
                            status=action[1], body=action[2], content_type=action[3]
                        )
                    elif kind == "drop":
                        assert request.transport is not None
                        request.transport.close()
                        return web.Response()
                    elif kind == "ok" and body.get("stream"):
                        return await stream(request, body, action)
                    elif kind in ("ok", "empty"):
                        text = action[1] if kind == "ok" else ""
                        pt, ct = (action[2], action[3]) if len(action) > 3 else (10, 5)
                        finish = action[4] if len(action) > 4 else "stop"
                        chat = request.path.endswith("/chat/completions")
                        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
                        if chat:
                            choice["message"] = {"role": "assistant", "content": text}
                        else:
                            choice["text"] = text
                        return web.json_response(
                            {
                                "id": f"x{n}",
                                "object": "chat.completion" if chat else "text_completion",
                                "created": 0,
                                "model": body.get("model", "m"),
                                "choices": [] if kind == "empty" else [choice],
                                "usage": {
                                    "prompt_tokens": pt,
                                    "completion_tokens": ct,
                                    "total_tokens": pt + ct,
                                },
                            }
                        )
                raise AssertionError("script ended without an answer")
            finally:
                self.inflight -= 1

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/v1/completions", handle)
            app.router.add_post("/v1/chat/completions", handle)
            app.router.add_get("/v1/models", models)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.base_url = f"http://127.0.0.1:{port}/v1"
            ready.set()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(start())
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

"""A loopback HTTP proxy in front of an OpenAI-compatible server (the stand-in) that plays what
real hosted endpoints do: a window of 429s with Retry-After, a window of refused connections
(the port closes and opens again), garbage answers forever, a share of requests that always
fail with 500, answers always cut at max_tokens, or a fixed token usage per answer (a price).
Real HTTP, so the real `openai` client and litecoder's whole layer are exercised. Runs in its
own thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


@dataclass
class FlakyProxy:
    target: str  # the real server's base URL, e.g. http://127.0.0.1:1234/v1
    mode: str = "pass"  # pass | garbage | truncate (every answer's finish_reason "length")
    fail_share: float = 0.0  # requests (by body) that always get HTTP 500
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens every answer reports
    # Outages, each (path ending, requests to it passed through before it starts, "429" |
    # "refused", seconds); each starts once.
    outages: list[tuple[str, int, str, float]] = field(default_factory=list)
    served: int = 0
    passed: dict[str, int] = field(default_factory=dict)  # requests passed through, per path
    times: list[float] = field(default_factory=list)  # request arrival times
    base_url: str = ""

    def __enter__(self) -> FlakyProxy:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._outage_end = 0.0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _refuse_for(self, seconds: float) -> None:
        await self._site.stop()  # the port refuses connections
        await asyncio.sleep(seconds)
        await self._listen()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.times.append(time.monotonic())
        if request.method == "POST":
            self.served += 1
            for outage in list(self.outages):
                path, after, kind, seconds = outage
                if not request.path.endswith(path) or self.passed.get(path, 0) < after:
                    continue
                self.outages.remove(outage)
                self._outage_end = time.monotonic() + seconds
                if kind == "refused":
                    self._reopen = asyncio.ensure_future(self._refuse_for(seconds))
                    assert request.transport is not None
                    request.transport.close()
                    return web.Response(status=503)
            if time.monotonic() < self._outage_end:
                return web.json_response(
                    {"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "1"}
                )
            if self.mode == "garbage":
                return web.Response(status=200, text="<html>upstream broke</html>")
        body = await request.read()
        if request.method == "POST" and self.fail_share:
            import hashlib

            if int(hashlib.sha256(body).hexdigest(), 16) % 10_000 < self.fail_share * 10_000:
                return web.json_response({"error": {"message": "internal error"}}, status=500)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        url = self.target.rstrip("/").removesuffix("/v1") + request.path_qs
        async with self._session.request(request.method, url, data=body, headers=headers) as r:
            data = await r.read()
            if request.method == "POST":
                for path in {p for p, *_ in self.outages} | set(self.passed):
                    if request.path.endswith(path):
                        self.passed[path] = self.passed.get(path, 0) + 1
            if (
                request.method == "POST"
                and r.status == 200
                and (self.usage or self.mode == "truncate")
            ):
                import json

                doc = json.loads(data)
                if self.usage:
                    pt, ct = self.usage
                    doc["usage"] = {"prompt_tokens": pt, "completion_tokens": ct,
                                    "total_tokens": pt + ct}  # fmt: skip
                if self.mode == "truncate":
                    for choice in doc.get("choices") or []:
                        choice["finish_reason"] = "length"
                data = json.dumps(doc).encode()
            return web.Response(status=r.status, body=data, content_type=r.content_type)

    def answered_since(self, t: float) -> int:
        return sum(1 for x in self.times if x >= t)

    def set(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)

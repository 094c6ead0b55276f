"""`LLMClient`: one teacher endpoint, with every policy litecoder applies to LLM calls.

- the real async `openai` client (aiohttp transport) against any OpenAI-compatible base_url,
  raw `/v1/completions` (MAGPIE) and `/v1/chat/completions`;
- bounded concurrency, requests- and tokens-per-minute limits (evenly spaced slots, shared by
  every process of a project through `limits_dir`: `litecoder.llm.shared.RateSchedule`);
- transient failures (429, 5xx, timeouts, refused or dropped connections, empty or
  undecodable answers) retried with backoff, honouring `Retry-After`, until the request's time
  budget (`max_wait_s`) is spent; a circuit breaker per endpoint (`breaker`);
- permanent failures (400, 401, 403, 404, 422) fail at once; every failure is one line;
- re-asks when the output fails to parse or validate, or was cut at `max_tokens`;
- a persistent response cache keyed by the full request (`litecoder.cache`), identical
  requests in flight sharing one call;
- usage per teacher (requests, tokens, USD) and the spending guard (`usage`): each request's
  worst case is reserved before it is sent, settled with its real cost after;
- `preflight()`: a quick check of the endpoint before a stage spends anything on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
import openai

from litecoder.cache import ResponseCache
from litecoder.config import Teacher
from litecoder.llm.breaker import breaker_for
from litecoder.llm.parse import InvalidOutput, one_line
from litecoder.llm.shared import RateSchedule
from litecoder.llm.usage import BudgetExceeded, Reservation, Usage, UsageBook

try:  # openai >= 3 ships its own httpx fork
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older SDKs
    import httpx  # type: ignore[no-redef]

log = logging.getLogger(__name__)

Kind = Literal["completion", "chat"]
T = TypeVar("T")
REASK_MESSAGE = (
    "Your previous answer could not be used: {error}\n"
    "Answer again, following the required format exactly."
)
# Seed offset for a re-asked raw completion (the prompt of a MAGPIE request cannot change).
REASK_SEED_STRIDE = 1_000_003
# What a request is, as structured metadata (JSON: stage, step, task id, ...): sent with every
# request as an HTTP header, for tracing proxies and the offline stand-in; OpenAI-compatible
# servers ignore it, and it is not part of the request's cache key.
META_HEADER = "X-Litecoder-Request"
Meta = dict[str, Any] | None
PERMANENT_STATUS = {400, 401, 403, 404, 405, 413, 422}


class LLMError(Exception):
    """A request that failed for good, with a one-line reason. `transient`: the last failure
    was the endpoint's (an outage, a bad answer), not a final verdict on the request."""

    def __init__(self, message: str, *, transient: bool = True, budget: bool = False):
        super().__init__(message)
        self.transient, self.budget = transient, budget


class Transient(Exception):
    def __init__(self, cause: str, retry_after: float | None = None):
        super().__init__(cause)
        self.retry_after = retry_after


class EndpointError(Exception):
    """The endpoint cannot be used at all (preflight): wrong URL, key, server or model."""


def request_key(kind: str, body: dict[str, Any]) -> str:
    """Stable hash of a full request as sent: endpoint kind + body (model, prompt or messages,
    sampling params, seed)."""
    import hashlib

    canon = json.dumps({"kind": kind, **body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(frozen=True)
class Response:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    key: str
    raw: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome[V]:
    """A validated call's end: a value, or the reason it failed (kept with the record)."""

    ok: bool
    value: V | None = None
    text: str | None = None
    error: str | None = None
    # api: the endpoint failed (not a final result: the stage retries it on its next run);
    # invalid_output: the model's answers stayed unusable (a result, with its reason).
    error_kind: Literal["api", "invalid_output"] | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _connection_cause(exc: BaseException) -> str | None:
    """What a transport error really was (the SDK reports a refused connection as a timeout)."""
    chain = _chain(exc)
    text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    if re.search(r"refused|Connect call failed", text, re.I):
        return "connection refused"
    if re.search(r"Name or service not known|nodename|resolv|getaddrinfo|DNSError", text, re.I):
        return "cannot resolve the host name"
    if any(isinstance(e, aiohttp.ConnectionTimeoutError) for e in chain):
        return "cannot connect (timed out connecting)"
    if any(isinstance(e, TimeoutError) for e in chain):
        return None  # connected, then silence: the caller says "no answer in N s"
    if any(isinstance(e, OSError) for e in chain) or "Cannot connect" in text:
        return f"cannot connect ({one_line(chain[-1])[:160]})"
    return None


def _chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and len(out) < 8:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _retry_after(exc: openai.APIStatusError) -> float | None:
    header = exc.response.headers.get("retry-after")
    try:
        return float(header) if header else None
    except ValueError:
        return None  # an HTTP date: backoff instead


class LLMClient:
    """One teacher endpoint. Create per stage run; close with `aclose()`."""

    def __init__(
        self,
        teacher: Teacher,
        *,
        base_url: str | None = None,
        cache: ResponseCache | None = None,
        usage: Usage | None = None,
        book: UsageBook | None = None,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
        share_identical: bool = True,
        served_as: str | None = None,
        limits_dir: Path | None = None,
    ):
        self.teacher = teacher
        # The name the endpoint answers to, when not the teacher's `model` (a server litecoder
        # started for a local model); cache keys keep the teacher's `model`.
        self.wire_model = served_as or teacher.model
        self.base_url = base_url or teacher.base_url
        if not self.base_url:
            raise LLMError(f"teacher {teacher.name!r} has no base_url", transient=False)
        self.cache = cache
        self.usage = usage if usage is not None else Usage()
        self.book = book  # the spending guard's view (None: no guard)
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        # Identical requests in flight share one call (off for agents: two trials that ask the
        # same thing must each get their own sample).
        self.share_identical = share_identical
        key = os.environ.get(teacher.api_key_env, "") if teacher.api_key_env else ""
        lim = teacher.limits
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=key or "EMPTY",
            timeout=teacher.timeout_s,
            max_retries=0,  # retries are ours (timed, Retry-After aware)
            http_client=openai.DefaultAioHttpClient(
                timeout=teacher.timeout_s,
                limits=httpx.Limits(
                    max_connections=lim.concurrency, max_keepalive_connections=lim.concurrency
                ),
            ),
        )
        self._sem = asyncio.Semaphore(lim.concurrency)
        # Rate limits as evenly spaced slots, shared with every process that uses the same
        # endpoint and model from this project (shards, sweep members, a gateway).
        self._rpm = self._schedule("rpm", lim.requests_per_minute, limits_dir)
        self._tpm = self._schedule("tpm", lim.tokens_per_minute, limits_dir)
        self._inflight: dict[str, asyncio.Future[Response]] = {}
        self._key = key
        self._session: aiohttp.ClientSession | None = None  # the gateway's plain transport

    def _schedule(
        self, kind: str, per_minute: int | None, where: Path | None
    ) -> RateSchedule | None:
        if not per_minute:
            return None
        path = None
        if where is not None:
            ident = f"{self.base_url}|{self.teacher.model}|{kind}"
            path = where / f"{kind}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.json"
        return RateSchedule(per_minute, path)

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()
        if self._session is not None:
            await self._session.close()

    # -- before anything is spent --

    async def preflight(self, timeout_s: float = 8.0) -> None:
        """Check the endpoint answers as an OpenAI-compatible server that serves this model
        and takes this key; EndpointError with the cause otherwise. An endpoint that is
        reachable but busy (429, 5xx) passes: requests will wait for it."""
        name, url = self.teacher.name, str(self.base_url)
        try:
            page = await self._client.with_options(timeout=timeout_s, max_retries=0).models.list()
        except openai.APIConnectionError as e:  # APITimeoutError included
            cause = _connection_cause(e)
            if cause is None:
                raise EndpointError(f"{name}: {url}: no answer in {timeout_s:g} s") from None
            raise EndpointError(f"{name}: cannot reach {url}: {cause or one_line(e)}") from None
        except openai.APIStatusError as e:
            code = e.status_code
            if code in (401, 403):
                env = self.teacher.api_key_env
                hint = f" (the key in ${env})" if env else " (no key configured: api_key_env)"
                raise EndpointError(
                    f"{name}: {url} refused the API key{hint}: HTTP {code}"
                ) from None
            if code == 429 or (code >= 500 and code not in (501, 505)):
                return  # busy or failing right now: the requests will wait for it
            raise EndpointError(
                f"{name}: {url} is not an OpenAI-compatible server "
                f"(GET {url.rstrip('/')}/models answered HTTP {code})"
            ) from None
        except (openai.APIError, ValueError) as e:
            raise EndpointError(
                f"{name}: {url} is not an OpenAI-compatible server ({one_line(e)[:120]})"
            ) from None
        models = [m.id for m in getattr(page, "data", None) or [] if hasattr(m, "id")]
        if not hasattr(page, "data"):
            raise EndpointError(
                f"{name}: {url} is not an OpenAI-compatible server (GET /models is not a list)"
            )
        if models and self.wire_model not in models:
            shown = ", ".join(models[:8]) + (", ..." if len(models) > 8 else "")
            raise EndpointError(
                f"{name}: model {self.wire_model!r} is not served at {url} (it serves: {shown})"
            )

    # -- request bodies --

    def _params(self, overrides: dict[str, Any]) -> dict[str, Any]:
        s = self.teacher.sampling
        params: dict[str, Any] = {
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        params.update({k: v for k, v in overrides.items() if v is not None})
        extra = dict(s.extra_body)
        extra.update(params.pop("extra_body", None) or {})
        if extra:
            params["extra_body"] = extra
        return params

    async def complete(
        self,
        prompt: str,
        *,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        meta: Meta = None,
        **params: Any,
    ) -> Response:
        body = {"model": self.teacher.model, "prompt": prompt, "seed": seed, **self._params(params)}
        if stop:
            body["stop"] = list(stop)
        return await self._call("completion", body, meta)

    async def chat(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        seed: int | None = None,
        meta: Meta = None,
        **params: Any,
    ) -> Response:
        body = {
            "model": self.teacher.model,
            "messages": [dict(m) for m in messages],
            "seed": seed,
            **self._params(params),
        }
        return await self._call("chat", body, meta)

    async def forward(self, kind: Kind, body: dict[str, Any], meta: Meta = None) -> Response:
        """An agent's request, passed on as it came (the gateway), under the same policies.
        A proxy has no use for the SDK's request building: it goes out as plain HTTP."""
        body = {k: v for k, v in body.items() if v is not None}
        if self.book is not None and self.book.guarded and not _max_out(body):
            # A request without an answer cap has no worst case to reserve: it gets the
            # teacher's configured max_tokens.
            body["max_tokens"] = self.teacher.sampling.max_tokens
        return await self._send(kind, body, "", meta, post=self._post_plain)

    # -- validated calls with re-asks --

    async def chat_validated(
        self,
        messages: Sequence[dict[str, Any]],
        parse: Callable[[str], T],
        *,
        max_reasks: int,
        seed: int | None = None,
        meta: Meta = None,
        **params: Any,
    ) -> Outcome[T]:
        """Chat until `parse` accepts the answer; each re-ask shows the model its error."""

        def ask(failures: list[tuple[str, str]]) -> Awaitable[Response]:
            msgs = [dict(m) for m in messages]
            for prev, err in failures:
                msgs += [
                    {"role": "assistant", "content": prev},
                    {"role": "user", "content": REASK_MESSAGE.format(error=err)},
                ]
            return self.chat(msgs, seed=seed, meta=meta, **params)

        return await self._validated(ask, parse, max_reasks)

    async def complete_validated(
        self,
        prompt: str,
        parse: Callable[[str], T],
        *,
        max_reasks: int,
        seed: int = 0,
        meta: Meta = None,
        **params: Any,
    ) -> Outcome[T]:
        """Raw completion until `parse` accepts it; a re-ask can only change the seed."""

        def ask(failures: list[tuple[str, str]]) -> Awaitable[Response]:
            s = seed + len(failures) * REASK_SEED_STRIDE
            return self.complete(prompt, seed=s, meta=meta, **params)

        return await self._validated(ask, parse, max_reasks)

    async def _validated(
        self,
        ask: Callable[[list[tuple[str, str]]], Awaitable[Response]],
        parse: Callable[[str], T],
        max_reasks: int,
    ) -> Outcome[T]:
        failures: list[tuple[str, str]] = []
        ptok = ctok = 0
        while True:
            try:
                resp = await ask(failures)
            except LLMError as e:
                kind: Literal["api", "invalid_output"] = "api"
                return Outcome(
                    False,
                    error=str(e),
                    error_kind=kind,
                    attempts=len(failures) + 1,
                    prompt_tokens=ptok,
                    completion_tokens=ctok,
                )
            ptok += resp.prompt_tokens
            ctok += resp.completion_tokens
            try:
                if resp.finish_reason == "length":
                    self.usage.truncated += 1
                    raise InvalidOutput(
                        f"the answer was cut off at max_tokens ({resp.completion_tokens} tokens)"
                    )
                value = parse(resp.text)
            except (ValueError, TypeError) as e:  # pydantic's ValidationError is a ValueError
                failures.append((resp.text, one_line(e)))
                if len(failures) > max_reasks:
                    return Outcome(
                        False,
                        text=resp.text,
                        error=f"invalid output after {len(failures)} tries: {failures[-1][1]}",
                        error_kind="invalid_output",
                        attempts=len(failures),
                        prompt_tokens=ptok,
                        completion_tokens=ctok,
                    )
                self.usage.reasks += 1
                continue
            return Outcome(
                True,
                value=value,
                text=resp.text,
                attempts=len(failures) + 1,
                prompt_tokens=ptok,
                completion_tokens=ctok,
            )

    # -- the one place that talks HTTP --

    async def _call(self, kind: Kind, body: dict[str, Any], meta: Meta = None) -> Response:
        body = {k: v for k, v in body.items() if v is not None}
        # Keyed on the body as it goes over the wire (extra_body fields merged in).
        key = request_key(
            kind,
            {**{k: v for k, v in body.items() if k != "extra_body"}, **body.get("extra_body", {})},
        )
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.usage.cache_hits += 1
                return _to_response(kind, hit, key, cached=True)
        if not self.share_identical:
            return await self._send(kind, body, key, meta)
        pending = self._inflight.get(key)
        if pending is not None:
            self.usage.cache_hits += 1
            return await asyncio.shield(pending)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            resp = await self._send(kind, body, key, meta)
            fut.set_result(resp)
            return resp
        except BaseException as e:
            fut.set_exception(e if isinstance(e, Exception) else LLMError("cancelled"))
            fut.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self._inflight[key]

    async def _post(self, kind: Kind, body: dict[str, Any], meta: Meta) -> dict[str, Any]:
        """One HTTP request: the answer, Transient (worth retrying) or LLMError (permanent).
        The answer is read as plain JSON (the SDK's response models are not built: they cost
        more than everything else the layer does, and a body they cannot take is ours to judge)."""
        api = self._client.completions if kind == "completion" else self._client.chat.completions
        headers = {META_HEADER: json.dumps(meta)} if meta else None
        try:
            raw_response = await api.with_raw_response.create(**body, extra_headers=headers)
            content = raw_response.http_response.content
        except openai.APIStatusError as e:
            msg = f"HTTP {e.status_code}: {one_line(e.message)[:160]}"
            if e.status_code in PERMANENT_STATUS:
                raise LLMError(msg, transient=False) from None
            raise Transient(msg, _retry_after(e)) from None
        except openai.APIConnectionError as e:  # APITimeoutError included
            cause = _connection_cause(e)
            if cause is None and isinstance(e, openai.APITimeoutError):
                cause = f"no answer in {self.teacher.timeout_s:g} s"
            raise Transient(cause or f"connection error: {one_line(e)[:160]}") from None
        except openai.APIError as e:
            raise Transient(f"the answer is not an OpenAI response ({one_line(e)[:120]})") from None
        return _answer(content)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.retry_initial_s * 2**attempt, self.retry_max_s))

    async def _post_plain(self, kind: Kind, body: dict[str, Any], meta: Meta) -> dict[str, Any]:
        """`_post` as a plain aiohttp request (same verdicts: answer, Transient, LLMError)."""
        if self._session is None:
            conc = self.teacher.limits.concurrency
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=conc, limit_per_host=conc),
                timeout=aiohttp.ClientTimeout(total=self.teacher.timeout_s),
            )
        path = "/completions" if kind == "completion" else "/chat/completions"
        headers = {"Authorization": f"Bearer {self._key or 'EMPTY'}"}
        if meta:
            headers[META_HEADER] = json.dumps(meta)
        try:
            async with self._session.post(
                str(self.base_url).rstrip("/") + path, json=body, headers=headers
            ) as r:
                content = await r.read()
                status = r.status
                retry_after = r.headers.get("retry-after")
        except TimeoutError:
            raise Transient(f"no answer in {self.teacher.timeout_s:g} s") from None
        except aiohttp.ClientError as e:
            cause = _connection_cause(e) or f"connection error: {one_line(e)[:160]}"
            raise Transient(cause) from None
        if status >= 400:
            msg = f"HTTP {status}: {one_line(content[:200].decode(errors='replace'))}"
            if status in PERMANENT_STATUS:
                raise LLMError(msg, transient=False)
            try:
                wait = float(retry_after) if retry_after else None
            except ValueError:
                wait = None
            raise Transient(msg, wait)
        return _answer(content)

    async def _send(
        self,
        kind: Kind,
        body: dict[str, Any],
        key: str,
        meta: Meta,
        post: Callable[[Kind, dict[str, Any], Meta], Awaitable[dict[str, Any]]] | None = None,
    ) -> Response:
        post = post or self._post
        # Only the teacher's own name is mapped to the served one: a forwarded agent request
        # that names another model goes out as it came.
        if self.wire_model != self.teacher.model and body.get("model") == self.teacher.model:
            body = {**body, "model": self.wire_model}
        start = time.monotonic()
        deadline = start + self.teacher.max_wait_s
        breaker = breaker_for(self.base_url or "")
        attempt = 0
        last = ""
        try:
            while True:
                waited_from = time.monotonic()
                try:
                    probe = await breaker.admit(deadline)
                except TimeoutError:
                    raise LLMError(self._gave_up(last, start, attempt)) from None
                self.usage.waited_outage_s += time.monotonic() - waited_from
                try:
                    async with self._sem:
                        await self._throttle(kind, body)
                        reservation = self._reserve(kind, body)
                        self.usage.requests += 1
                        attempt += 1
                        spent = None
                        try:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                raise Transient(last or "no time left")
                            try:
                                raw = await asyncio.wait_for(post(kind, body, meta), left)
                            except TimeoutError:
                                # The whole attempt ends with the request's time budget.
                                before = f"; before: {last}" if last else ""
                                raise LLMError(
                                    f"{self.teacher.name}: no answer before max_wait_s "
                                    f"{self.teacher.max_wait_s:g} ran out ({attempt} tries"
                                    f"{before})"
                                ) from None
                            resp = _to_response(kind, raw, key, cached=False)
                            spent = self._cost(resp.prompt_tokens, resp.completion_tokens)
                        finally:
                            self._settle(reservation, spent)
                except Transient as t:
                    breaker.failure(probe)
                    last = str(t)
                    wait = t.retry_after if t.retry_after is not None else self._backoff(attempt)
                    wait = min(wait, self.retry_max_s) + random.uniform(0, 0.1)
                    # A last try just before the budget ends rather than giving up early.
                    wait = min(wait, deadline - time.monotonic() - 0.05)
                    if wait <= 0:
                        raise LLMError(self._gave_up(last, start, attempt)) from None
                    self.usage.retries += 1
                    log.debug("retrying %s in %.1fs after %s", self.teacher.name, wait, last)
                    await asyncio.sleep(wait)
                    continue
                except LLMError as e:
                    if probe and not e.budget:  # a permanent answer: the endpoint is up
                        breaker.success()
                    raise
                breaker.success()
                break
        except LLMError:
            self.usage.errors += 1
            raise
        finally:
            self.usage.llm_seconds += time.monotonic() - start
        assert spent is not None
        self.usage.add(spent)
        if self.cache is not None and key:
            self.cache.put(key, kind, self.teacher.model, raw)
        return resp

    # -- the spending guard --

    def _worst_case(self, kind: Kind, body: dict[str, Any]) -> tuple[float, int]:
        """A request's most possible cost: every byte of its prompt a token (no tokenizer
        makes more; a few per message for the chat template), and its whole answer cap."""
        if kind == "completion":
            prompt, n_msgs = str(body.get("prompt", "")), 0
        else:
            msgs = body.get("messages") or []
            prompt, n_msgs = json.dumps(msgs, ensure_ascii=False), len(msgs)
        prompt_tokens = len(prompt.encode()) + 8 * n_msgs + 16
        out = _max_out(body) or self.teacher.sampling.max_tokens
        price = self.teacher.price
        cost = (prompt_tokens * price.input_per_mtok + out * price.output_per_mtok) / 1e6
        return cost, prompt_tokens + out

    def _reserve(self, kind: Kind, body: dict[str, Any]) -> Reservation | None:
        if self.book is None or not self.book.guarded:
            return None
        cost, tokens = self._worst_case(kind, body)
        ttl = self.teacher.max_wait_s + self.teacher.timeout_s + 60
        try:
            return self.book.reserve(cost, tokens, ttl)
        except BudgetExceeded as e:
            raise LLMError(str(e), transient=False, budget=True) from None

    def _settle(self, reservation: Reservation | None, spent: Usage | None) -> None:
        if self.book is not None:
            self.book.settle(reservation, spent)

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> Usage:
        """One answered call as usage (tokens and USD at the configured prices)."""
        price = self.teacher.price
        return Usage(
            calls=1,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=(
                prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok
            )
            / 1e6,
        )

    def _gave_up(self, last: str, start: float, attempts: int) -> str:
        spent = time.monotonic() - start
        return (
            f"{self.teacher.name}: {last or 'endpoint down'} "
            f"(gave up after {spent:.0f}s and {attempts} tries; max_wait_s "
            f"{self.teacher.max_wait_s:g})"
        )

    async def _throttle(self, kind: Kind, body: dict[str, Any]) -> None:
        if self._rpm is not None:
            await self._rpm.acquire()
        if self._tpm is not None:
            text = body["prompt"] if kind == "completion" else json.dumps(body["messages"])
            await self._tpm.acquire(len(text) // 4 + _max_out(body))

    # -- streaming, for agents that stream (the gateway) --

    async def stream(
        self, kind: Kind, body: dict[str, Any], meta: Meta = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Chunks of a streamed answer, under the same limits; failures before the first chunk
        are retried like any request, failures after it end the stream."""
        start = time.monotonic()
        deadline = start + self.teacher.max_wait_s
        breaker = breaker_for(self.base_url or "")
        create = (
            self._client.completions.create
            if kind == "completion"
            else self._client.chat.completions.create
        )
        body = {**body, "stream": True}
        body.setdefault("stream_options", {"include_usage": True})
        headers = {META_HEADER: json.dumps(meta)} if meta else None
        attempt = 0
        last = ""
        while True:
            try:
                probe = await breaker.admit(deadline)
            except TimeoutError:
                raise LLMError(self._gave_up(last, start, attempt)) from None
            async with self._sem:
                await self._throttle(kind, body)
                reservation = self._reserve(kind, body)
                self.usage.requests += 1
                attempt += 1
                spent = Usage()
                try:
                    stream = await create(**body, extra_headers=headers)
                    started = False
                    async for chunk in stream:
                        raw = chunk.model_dump(mode="json")
                        started = True
                        usage = raw.get("usage") or {}
                        if usage:
                            spent = self._cost(
                                int(usage.get("prompt_tokens") or 0),
                                int(usage.get("completion_tokens") or 0),
                            )
                        yield raw
                    breaker.success()
                    spent.calls = 1
                    self.usage.add(spent)
                    return
                except (openai.APIStatusError, openai.APIConnectionError) as e:
                    if started:
                        raise LLMError(f"the stream broke off: {one_line(e)}") from None
                    if isinstance(e, openai.APIStatusError) and e.status_code in PERMANENT_STATUS:
                        raise LLMError(f"HTTP {e.status_code}", transient=False) from None
                    breaker.failure(probe)
                    last = one_line(e)[:160]
                finally:
                    self._settle(reservation, spent)
            wait = min(self._backoff(attempt), deadline - time.monotonic() - 0.05)
            if wait <= 0:
                raise LLMError(self._gave_up(last, start, attempt))
            self.usage.retries += 1
            await asyncio.sleep(wait)


def _max_out(body: dict[str, Any]) -> int:
    """A request's answer cap (0: none given)."""
    return int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)


def _answer(content: bytes) -> dict[str, Any]:
    """A 2xx body as an OpenAI answer, or Transient (a body no SDK could take)."""
    try:
        raw = json.loads(content)
    except ValueError:  # not JSON, not UTF-8
        raise Transient(f"the answer is not an OpenAI response: {content[:80]!r}") from None
    if not isinstance(raw, dict):
        raise Transient(f"the answer is not an OpenAI response: {content[:80]!r}")
    choices = raw.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise Transient("the answer has no choices")
    return raw


def _to_response(kind: Kind, raw: dict[str, Any], key: str, *, cached: bool) -> Response:
    choice = raw["choices"][0]
    if kind == "completion":
        text = choice.get("text") or ""
    else:
        text = (choice.get("message") or {}).get("content") or ""
    usage = raw.get("usage") or {}
    return Response(
        text=text,
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached=cached,
        key=key,
        raw=raw,
    )

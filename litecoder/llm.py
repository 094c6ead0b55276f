"""The LLM client layer: every LLM call in litecoder goes through `LLMClient`.

- the real async `openai` client (aiohttp transport) against any OpenAI-compatible base_url,
  raw `/v1/completions` (MAGPIE) and `/v1/chat/completions`;
- bounded concurrency, requests- and tokens-per-minute limits (aiolimiter);
- retries with exponential backoff + jitter on 429 / 5xx / timeouts / dropped connections,
  honouring `Retry-After` (tenacity);
- bounded re-asks when the output fails to parse or validate, the last failure kept as the
  record's outcome;
- a persistent sqlite response cache keyed by a hash of the full request, written as each
  response arrives (a killed stage resumes without repeating finished calls; sweeps share it);
- per-stage token / request / cost accounting.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import openai
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

from litecoder.config import Teacher

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


class LLMError(Exception):
    """A request that failed for good (after retries), with a one-line reason."""


class InvalidOutput(ValueError):
    """Raised by parse functions when the model's text is unusable."""


class EmptyChoices(Exception):
    """The server answered 200 with no choices: retried like a transient server error."""


def request_key(kind: str, body: dict[str, Any]) -> str:
    """Stable hash of a full request as sent: endpoint kind + body (model, prompt or messages,
    sampling params, seed)."""
    canon = json.dumps({"kind": kind, **body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


# --- cache ---------------------------------------------------------------------------------


class ResponseCache:
    """sqlite (WAL) cache of raw responses; safe for concurrent processes."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=60000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, kind TEXT, model TEXT,"
            " created REAL, response TEXT)"
        )

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, kind: str, model: str, response: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?)",
                (key, kind, model, time.time(), json.dumps(response)),
            )

    def keys(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT key FROM responses")}

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_cache(cache_dir: Path | None) -> ResponseCache | None:
    return ResponseCache(cache_dir / "llm.sqlite") if cache_dir is not None else None


# --- accounting ----------------------------------------------------------------------------


@dataclass
class Usage:
    requests: int = 0  # HTTP requests sent (retries included)
    calls: int = 0  # logical calls answered by the server
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    errors: int = 0  # calls that failed for good
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    llm_seconds: float = 0.0

    def add(self, other: Usage) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost_usd"] = round(d["cost_usd"], 6)
        d["llm_seconds"] = round(d["llm_seconds"], 3)
        return d


@dataclass
class UsageBook:
    """Usage per teacher for one stage run."""

    by_teacher: dict[str, Usage] = field(default_factory=dict)

    def for_teacher(self, name: str) -> Usage:
        return self.by_teacher.setdefault(name, Usage())

    def total(self) -> Usage:
        tot = Usage()
        for u in self.by_teacher.values():
            tot.add(u)
        return tot

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total().to_dict(),
            "by_teacher": {k: v.to_dict() for k, v in sorted(self.by_teacher.items())},
        }


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    key: str


@dataclass(frozen=True)
class Outcome[V]:
    """A validated call's end: a value, or the reason it failed (kept with the record)."""

    ok: bool
    value: V | None = None
    text: str | None = None
    error: str | None = None
    error_kind: Literal["api", "invalid_output"] | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


# --- retry policy --------------------------------------------------------------------------


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, EmptyChoices)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


class _WaitRetryAfter(wait_base):
    """Exponential backoff with full jitter; a server's Retry-After wins when present."""

    def __init__(self, initial: float, maximum: float):
        self.initial, self.maximum = initial, maximum

    def __call__(self, retry_state: Any) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, openai.APIStatusError):
            header = exc.response.headers.get("retry-after")
            if header:
                try:
                    return min(float(header), self.maximum) + random.uniform(0, self.initial)
                except ValueError:
                    pass  # an HTTP date: fall back to backoff
        backoff = self.initial * 2 ** (retry_state.attempt_number - 1)
        return random.uniform(0, min(backoff, self.maximum))


def _short(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {str(exc.message)[:200]}"
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection error: {exc.__cause__ or exc}"[:200]
    if isinstance(exc, EmptyChoices):
        return "response had no choices"
    return f"{type(exc).__name__}: {exc}"[:200]


# --- the client ----------------------------------------------------------------------------


class LLMClient:
    """One teacher endpoint. Create per stage run; close with `aclose()`."""

    def __init__(
        self,
        teacher: Teacher,
        *,
        base_url: str | None = None,
        cache: ResponseCache | None = None,
        usage: Usage | None = None,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
    ):
        self.teacher = teacher
        self.base_url = base_url or teacher.base_url
        if not self.base_url:
            raise LLMError(f"teacher {teacher.name!r} has no base_url")
        self.cache = cache
        self.usage = usage if usage is not None else Usage()
        # The key is read from the environment now, never stored in config or on disk.
        key = os.environ.get(teacher.api_key_env, "") if teacher.api_key_env else ""
        lim = teacher.limits
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=key or "EMPTY",
            timeout=teacher.timeout_s,
            max_retries=0,  # retries are ours (counted, Retry-After aware)
            http_client=openai.DefaultAioHttpClient(
                timeout=teacher.timeout_s,
                limits=httpx.Limits(
                    max_connections=lim.concurrency, max_keepalive_connections=lim.concurrency
                ),
            ),
        )
        self._sem = asyncio.Semaphore(lim.concurrency)
        # Per-second leaky buckets: a per-minute budget without a minute's worth of burst.
        self._rpm = _per_second(lim.requests_per_minute)
        self._tpm = _per_second(lim.tokens_per_minute)
        self._inflight: dict[str, asyncio.Future[Response]] = {}
        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(teacher.max_retries + 1),
            wait=_WaitRetryAfter(retry_initial_s, retry_max_s),
            retry=retry_if_exception(_retryable),
            before_sleep=self._on_retry,
            reraise=True,
        )

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    def _on_retry(self, retry_state: Any) -> None:
        self.usage.retries += 1
        exc = retry_state.outcome.exception()
        log.debug("retrying %s after %s", self.teacher.name, _short(exc))

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
                return Outcome(
                    False,
                    error=str(e),
                    error_kind="api",
                    attempts=len(failures) + 1,
                    prompt_tokens=ptok,
                    completion_tokens=ctok,
                )
            ptok += resp.prompt_tokens
            ctok += resp.completion_tokens
            try:
                value = parse(resp.text)
            except (ValueError, TypeError) as e:  # pydantic's ValidationError is a ValueError
                failures.append((resp.text, _one_line(e)))
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
        # Identical requests in flight share one HTTP call.
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

    async def _send(self, kind: Kind, body: dict[str, Any], key: str, meta: Meta) -> Response:
        create = (
            self._client.completions.create
            if kind == "completion"
            else self._client.chat.completions.create
        )
        start = time.monotonic()
        tries = 0
        try:
            async for attempt in self._retrying.copy():
                with attempt:
                    tries = attempt.retry_state.attempt_number
                    async with self._sem:
                        await self._throttle(kind, body)
                        self.usage.requests += 1
                        headers = {META_HEADER: json.dumps(meta)} if meta else None
                        result = await create(**body, extra_headers=headers)
                        raw = result.model_dump(mode="json")
                        if not raw.get("choices"):
                            raise EmptyChoices()
        except Exception as e:
            self.usage.errors += 1
            if isinstance(e, (openai.APIError, EmptyChoices)):
                raise LLMError(f"{self.teacher.name}: {_short(e)} (after {tries} tries)") from e
            raise
        finally:
            self.usage.llm_seconds += time.monotonic() - start
        self.usage.calls += 1
        resp = _to_response(kind, raw, key, cached=False)
        self.usage.prompt_tokens += resp.prompt_tokens
        self.usage.completion_tokens += resp.completion_tokens
        price = self.teacher.price
        self.usage.cost_usd += (
            resp.prompt_tokens * price.input_per_mtok
            + resp.completion_tokens * price.output_per_mtok
        ) / 1e6
        if self.cache is not None:
            self.cache.put(key, kind, self.teacher.model, raw)
        return resp

    async def _throttle(self, kind: Kind, body: dict[str, Any]) -> None:
        if self._rpm is not None:
            await self._rpm.acquire()
        if self._tpm is not None:
            text = body["prompt"] if kind == "completion" else json.dumps(body["messages"])
            estimate = len(text) // 4 + int(body.get("max_tokens") or 0)
            await self._tpm.acquire(min(estimate, self._tpm.max_rate))


def _per_second(per_minute: int | None) -> AsyncLimiter | None:
    return AsyncLimiter(max(1.0, per_minute / 60), 1.0) if per_minute else None


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
    )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a model's text (tolerates code fences and prose around it)."""
    start = text.find("{")
    if start < 0:
        raise InvalidOutput("no JSON object in the answer")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as e:
        raise InvalidOutput(f"bad JSON: {e.msg} at position {e.pos}") from None
    if not isinstance(obj, dict):
        raise InvalidOutput("the JSON answer is not an object")
    return obj

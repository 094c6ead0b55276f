"""State that several processes share: the run's spend ledger and an endpoint's rate limits.

Envprep shards, sweep members, a stage and its gateway are separate processes (on one machine
or on a shared file system), yet one budget and one requests-per-minute limit must hold for
all of them together. Each is a small JSON file changed only under a POSIX record lock
(`fcntl.lockf`, which NFS honours), read, modified and replaced atomically while the lock is
held: no update is lost, whoever writes.

- `Ledger`: what each stage has spent (settled calls) and what calls in flight have
  reserved. A reservation carries an expiry, so one left by a killed process stops counting.
- `RateSchedule`: the next free slot of a rate limit. Each acquisition takes the next slot
  (`60 / per_minute` seconds apart, or its share of a tokens-per-minute limit) and waits
  until it; the slots granted are kept (`granted`), so what a limit did is read off its own
  schedule, not a wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def locked_json(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON document at `path`, exclusively locked; what the block leaves in it is
    written back atomically before the lock is released."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            data = {}  # a torn or foreign file: start over rather than stop every stage
        if not isinstance(data, dict):
            data = {}
        before = json.dumps(data, sort_keys=True)
        yield data
        if json.dumps(data, sort_keys=True) != before:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)


USAGE_KEYS = ("calls", "prompt_tokens", "completion_tokens", "cost_usd")


class Ledger:
    """A run directory's spend ledger (`.litecoder/spend.json`):
    `{"spent": {stage: {calls, prompt_tokens, completion_tokens, cost_usd}},
      "reserved": {id: {stage, cost_usd, tokens, expires}}}`."""

    def __init__(self, path: Path):
        self.path = path

    @contextlib.contextmanager
    def _doc(self) -> Iterator[dict[str, Any]]:
        with locked_json(self.path) as data:
            if data and "spent" not in data and "reserved" not in data:
                # An older ledger: {stage: usage}.
                old = dict(data)
                data.clear()
                data["spent"] = old
            yield data

    def totals(self, data: dict[str, Any] | None = None) -> tuple[float, int, float, int]:
        """(spent USD, spent tokens, reserved USD, reserved tokens) over every stage."""
        if data is None:
            with self._doc() as doc:
                return self.totals(doc)
        spent = data.get("spent") or {}
        cost = sum(float(s.get("cost_usd", 0)) for s in spent.values())
        tokens = sum(int(s.get("prompt_tokens", 0)) + int(s.get("completion_tokens", 0))
                     for s in spent.values())  # fmt: skip
        now = time.time()
        live = [r for r in (data.get("reserved") or {}).values() if r.get("expires", 0) > now]
        return cost, tokens, sum(r["cost_usd"] for r in live), sum(r["tokens"] for r in live)

    def reserve(
        self,
        stage: str,
        cost_usd: float,
        tokens: int,
        ttl_s: float,
        check: Callable[[float, int], None],
    ) -> str:
        """Reserve a call's worst case once `check(run cost, run tokens)` (spent and reserved
        so far, everything in this run directory, this call included) lets it; `check`
        raises to refuse."""
        rid = uuid.uuid4().hex
        with self._doc() as data:
            reserved = data.setdefault("reserved", {})
            now = time.time()
            for k in [k for k, r in reserved.items() if r.get("expires", 0) <= now]:
                del reserved[k]  # left by a process that died mid-call
            spent, spent_tok, res, res_tok = self.totals(data)
            check(spent + res + cost_usd, spent_tok + res_tok + tokens)
            reserved[rid] = {
                "stage": stage,
                "cost_usd": cost_usd,
                "tokens": tokens,
                "expires": now + ttl_s,
            }
        return rid

    def settle(self, rid: str | None, stage: str, usage: dict[str, float]) -> None:
        """A call ended: its reservation (if any) goes, what it really cost is added."""
        with self._doc() as data:
            if rid:
                (data.get("reserved") or {}).pop(rid, None)
            if any(usage.get(k) for k in USAGE_KEYS):
                row = data.setdefault("spent", {}).setdefault(stage, {})
                for k in USAGE_KEYS:
                    row[k] = row.get(k, 0) + usage.get(k, 0)
                row["cost_usd"] = round(float(row["cost_usd"]), 9)

    def release(self, rid: str) -> None:
        self.settle(rid, "", {})

    def by_stage(self) -> dict[str, dict[str, Any]]:
        """Spent per stage, and what calls in flight have reserved (`reserved_usd`)."""
        with self._doc() as data:
            out = {k: dict(v) for k, v in (data.get("spent") or {}).items()}
            now = time.time()
            for r in (data.get("reserved") or {}).values():
                if r.get("expires", 0) > now:
                    row = out.setdefault(r["stage"], {})
                    row["reserved_usd"] = row.get("reserved_usd", 0) + r["cost_usd"]
            return out


class RateSchedule:
    """A rate limit as a schedule of slots, shared through `path` (None: this process only).
    `per_minute` units (requests, or tokens) per minute, spaced evenly: no burst."""

    def __init__(
        self,
        per_minute: float,
        path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        if per_minute <= 0:
            raise ValueError("a rate limit must be positive")
        self.per_minute = per_minute
        self.path = path
        self.clock, self.sleep = clock, sleep
        self._next = 0.0  # without a file
        self._lock = asyncio.Lock()
        self.granted: list[float] = []  # the slots this process was given

    def _take(self, amount: float) -> float:
        interval = amount * 60.0 / self.per_minute
        now = self.clock()
        if self.path is None:
            slot = max(now, self._next)
            self._next = slot + interval
            return slot
        with locked_json(self.path) as data:
            slot = max(now, float(data.get("next", 0.0)))
            data["next"] = slot + interval
        return slot

    async def acquire(self, amount: float = 1.0) -> float:
        """Wait for this process's next slot; returns the slot's time."""
        async with self._lock:  # one file operation at a time per process
            slot = self._take(amount)
        self.granted.append(slot)
        wait = slot - self.clock()
        if wait > 0:
            await self.sleep(wait)
        return slot

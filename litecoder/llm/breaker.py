"""A circuit breaker per endpoint: when requests keep failing, they stop hammering it.

After `threshold` transient failures in a row, the endpoint counts as down: every request
waits, while one at a time probes it, with pauses that double up to a limit. The first success
lets everyone go. Waiting still counts against each request's time budget, so an endpoint
that never comes back ends in failures, not in a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref

log = logging.getLogger(__name__)


class Breaker:
    def __init__(self, endpoint: str, threshold: int = 5, probe_min_s: float = 1.0,
                 probe_max_s: float = 15.0):  # fmt: skip
        self.endpoint = endpoint
        self.threshold = threshold
        self.probe_min_s, self.probe_max_s = probe_min_s, probe_max_s
        self.failures = 0
        self.opened_at: float | None = None
        self._pause = probe_min_s
        self._next_probe = 0.0
        self._probing = False
        self._changed = asyncio.Event()
        _ALL.add(self)

    @property
    def down(self) -> bool:
        return self.opened_at is not None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def admit(self, deadline: float) -> bool:
        """Wait while the endpoint is down; True when the caller goes as the probe. Raises
        TimeoutError when `deadline` passes first."""
        while self.down:
            now = time.monotonic()
            if not self._probing and now >= self._next_probe:
                self._probing = True
                return True
            if now >= deadline:
                raise TimeoutError
            wait = min(
                deadline - now, max(0.05, self._next_probe - now) if not self._probing else 1.0
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
        return False

    def success(self) -> None:
        if self.down:
            assert self.opened_at is not None
            log.warning("%s is answering again (down %.0fs)", self.endpoint, self.waited())
        self.failures = 0
        self.opened_at = None
        self._probing = False
        self._pause = self.probe_min_s
        self._notify()

    def failure(self, probe: bool) -> None:
        self.failures += 1
        now = time.monotonic()
        if probe:
            self._probing = False
            self._pause = min(self._pause * 1.5, self.probe_max_s)
            self._next_probe = now + self._pause
            self._notify()
        elif not self.down and self.failures >= self.threshold:
            self.opened_at = now
            self._next_probe = now + self._pause
            log.warning("%s looks down (%d failures in a row): requests wait", self.endpoint,
                        self.failures)  # fmt: skip
            self._notify()

    def waited(self) -> float:
        return time.monotonic() - self.opened_at if self.opened_at is not None else 0.0


_ALL: weakref.WeakSet[Breaker] = weakref.WeakSet()
_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Breaker]] = (
    weakref.WeakKeyDictionary()
)


def breaker_for(endpoint: str) -> Breaker:
    """The breaker of an endpoint, shared by every client of it in this event loop."""
    loop = asyncio.get_running_loop()
    per_loop = _BY_LOOP.setdefault(loop, {})
    if endpoint not in per_loop:
        per_loop[endpoint] = Breaker(endpoint)
    return per_loop[endpoint]


def outage_status() -> str:
    """'endpoint ... down, waiting 12s' for the progress bar ('' when all is well)."""
    down = [b for b in list(_ALL) if b.down]
    if not down:
        return ""
    b = max(down, key=lambda b: b.waited())
    return f"endpoint {b.endpoint} down, waiting {b.waited():.0f}s"

"""What LLM calls cost: requests, tokens and dollars per teacher, and the spending guard."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from litecoder.llm.shared import USAGE_KEYS, Ledger


@dataclass
class Usage:
    requests: int = 0  # HTTP requests sent (retries included)
    calls: int = 0  # logical calls answered by the server
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    errors: int = 0  # calls that failed for good
    truncated: int = 0  # answers cut at max_tokens (re-asked)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    llm_seconds: float = 0.0
    waited_outage_s: float = 0.0  # time requests waited for a down endpoint

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("cost_usd", "llm_seconds", "waited_outage_s"):
            d[k] = round(d[k], 6 if k == "cost_usd" else 3)
        return d


class BudgetExceeded(Exception):
    """The spending guard stopped a request; the message says which limit and how to go on."""


@dataclass(frozen=True)
class Limit:
    max_cost_usd: float | None = None
    max_tokens: int | None = None

    @property
    def set(self) -> bool:
        return self.max_cost_usd is not None or self.max_tokens is not None


@dataclass(frozen=True)
class Reservation:
    cost_usd: float
    tokens: int
    ledger_id: str | None = None


@dataclass
class UsageBook:
    """Usage per teacher for one stage run, and the spending guard: a limit for the stage and
    one for the whole run (everything spent in this run directory by any process: its
    `Ledger`).

    Before a request is sent its worst case (every prompt token and `max_tokens` of answer, at
    the configured prices) is reserved; a request whose reservation would take the stage or
    the run past a limit is not sent. After the answer the reservation is settled with what
    the call really cost, in this book and in the ledger, so spend can never pass a limit by
    more than what one answer exceeds its own worst case."""

    by_teacher: dict[str, Usage] = field(default_factory=dict)
    stage_limit: Limit = field(default_factory=Limit)
    run_limit: Limit = field(default_factory=Limit)
    ledger: Ledger | None = None
    stage: str = "stage"
    reserved_usd: float = 0.0  # this stage's calls in flight
    reserved_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def guarded(self) -> bool:
        return self.stage_limit.set or self.run_limit.set

    def for_teacher(self, name: str) -> Usage:
        return self.by_teacher.setdefault(name, Usage())

    def total(self) -> Usage:
        tot = Usage()
        for u in self.by_teacher.values():
            tot.add(u)
        return tot

    def reserve(self, cost_usd: float, tokens: int, ttl_s: float) -> Reservation:
        """Reserve a request's worst case, or BudgetExceeded when it would pass a limit."""
        with self._lock:
            now = self.total()
            _check(
                "this stage",
                "llm.budget.stage",
                self.stage_limit,
                now.cost_usd + self.reserved_usd + cost_usd,
                now.tokens + self.reserved_tokens + tokens,
                cost_usd,
            )
            self.reserved_usd += cost_usd
            self.reserved_tokens += tokens
        rid = None
        if self.ledger is not None and self.run_limit.set:
            try:
                rid = self.ledger.reserve(
                    self.stage,
                    cost_usd,
                    tokens,
                    ttl_s,
                    lambda c, t: _check(
                        "this run", "llm.budget.run", self.run_limit, c, t, cost_usd
                    ),
                )
            except BaseException:
                with self._lock:
                    self.reserved_usd -= cost_usd
                    self.reserved_tokens -= tokens
                raise
        return Reservation(cost_usd, tokens, rid)

    def settle(self, r: Reservation | None, spent: Usage | None) -> None:
        """A request ended (answered or not): its reservation goes; `spent` (what it really
        cost, already counted in its teacher's Usage) goes to the ledger."""
        if r is not None:
            with self._lock:
                self.reserved_usd -= r.cost_usd
                self.reserved_tokens -= r.tokens
        if self.ledger is not None and ((r is not None and r.ledger_id) or spent is not None):
            delta = {k: getattr(spent, k) for k in USAGE_KEYS} if spent is not None else {}
            self.ledger.settle(r.ledger_id if r else None, self.stage, delta)

    def check(self) -> None:
        """Raise BudgetExceeded when a limit is already reached (nothing more may be sent)."""
        self.settle(self.reserve(0.0, 0, 1.0), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total().to_dict(),
            "by_teacher": {k: v.to_dict() for k, v in sorted(self.by_teacher.items())},
        }


def _check(scope: str, knob: str, lim: Limit, cost: float, tokens: int, this: float) -> None:
    """BudgetExceeded when `cost`/`tokens` (spent, reserved and this request's worst case)
    would pass `lim`."""
    if lim.max_cost_usd is not None and cost > lim.max_cost_usd + 1e-12:
        before = cost - this
        raise BudgetExceeded(
            f"spending guard: {scope} would pass max_cost_usd {lim.max_cost_usd} (${before:.4f} "
            f"spent or reserved, the next request up to ${this:.4f}); raise "
            f"{knob}.max_cost_usd and run again to go on (finished calls are kept)"
        )
    if lim.max_tokens is not None and tokens > lim.max_tokens:
        raise BudgetExceeded(
            f"spending guard: {scope} would pass max_tokens {lim.max_tokens} ({tokens} with the "
            f"next request's worst case); raise {knob}.max_tokens and run again to go on"
        )


def output_rates(
    outcomes: list[tuple[bool, int]], completion_tokens: int, wall_s: float
) -> dict[str, Any]:
    """How often a model's answers were usable: per (valid, attempts) pair of each call, the
    share valid in the end and on the first try, and the answer tokens per wall-clock second
    of the stage (cache hits make it look faster)."""
    n = len(outcomes)
    return {
        "valid_rate": round(sum(ok for ok, _ in outcomes) / n, 4) if n else None,
        "valid_first_try_rate": round(sum(ok and a == 1 for ok, a in outcomes) / n, 4)
        if n
        else None,
        "completion_tokens_per_s": round(completion_tokens / wall_s, 2) if wall_s > 0 else None,
    }

"""What LLM calls cost: requests, tokens and dollars per teacher, and the spending guard."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from litecoder.io import write_json


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


@dataclass
class UsageBook:
    """Usage per teacher for one stage run, and the spending guard: a limit for the stage and
    one for the whole run (everything spent in this run directory, kept in a ledger)."""

    by_teacher: dict[str, Usage] = field(default_factory=dict)
    stage_limit: Limit = field(default_factory=Limit)
    run_limit: Limit = field(default_factory=Limit)
    spent_before: Usage = field(default_factory=Usage)  # earlier stage runs (the ledger)

    def for_teacher(self, name: str) -> Usage:
        return self.by_teacher.setdefault(name, Usage())

    def total(self) -> Usage:
        tot = Usage()
        for u in self.by_teacher.values():
            tot.add(u)
        return tot

    def check(self) -> None:
        """Raise BudgetExceeded once a limit is reached (in-flight calls still finish)."""
        now = self.total()
        for scope, lim, cost, tokens in (
            ("this stage", self.stage_limit, now.cost_usd, now.tokens),
            (
                "this run",
                self.run_limit,
                now.cost_usd + self.spent_before.cost_usd,
                now.tokens + self.spent_before.tokens,
            ),
        ):
            knob = "llm.budget." + ("stage" if scope == "this stage" else "run")
            if lim.max_cost_usd is not None and cost >= lim.max_cost_usd:
                raise BudgetExceeded(
                    f"spending guard: {scope} spent ${cost:.4f} of max_cost_usd "
                    f"{lim.max_cost_usd} (raise {knob}.max_cost_usd and run again to go on)"
                )
            if lim.max_tokens is not None and tokens >= lim.max_tokens:
                raise BudgetExceeded(
                    f"spending guard: {scope} used {tokens} of max_tokens {lim.max_tokens} "
                    f"tokens (raise {knob}.max_tokens and run again to go on)"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total().to_dict(),
            "by_teacher": {k: v.to_dict() for k, v in sorted(self.by_teacher.items())},
        }


def read_ledger(path: Path) -> Usage:
    """What earlier stage runs in this run directory spent."""
    tot = Usage()
    if path.exists():
        for u in json.loads(path.read_text()).values():
            tot.add(Usage(**{k: v for k, v in u.items() if k in Usage.__dataclass_fields__}))
    return tot


def add_to_ledger(path: Path, stage: str, usage: Usage) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    old = Usage(**{k: v for k, v in data.get(stage, {}).items() if k in Usage.__dataclass_fields__})
    old.add(usage)
    data[stage] = old.to_dict()
    write_json(path, data)


def output_rates(outcomes: list[tuple[bool, int]], completion_tokens: int, wall_s: float) -> dict:
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

"""Trajectory filter rules: a registry, each rule a function that returns structured reasons.

A rule is a function `(result, trajectory, config) -> list[Reason]` registered with `@rule`
(in `rules.py`); `filter.rules` in the config lists the ones that run. Reasons are
`Reason(rule, detail)` records, never free text parsed back. `judge_trial` applies them: trial
errors that are not the agent's own are infrastructure (kept apart), the agent's own errors
and every rule's reasons reject the trajectory, and a trajectory that passes everything and
repeats an earlier one is a duplicate.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from litecoder.config import Filter
from litecoder.filters.registry import RULES, RuleFn, rule

__all__ = ["RULES", "Failure", "RuleFn", "judge_trial", "rule", "signature"]
from litecoder.records import Reason
from litecoder.trajectory import Trajectory

Failure = Literal["", "infra", "agent", "quality"]


def signature(traj: Trajectory) -> str:
    """What the model produced, per turn (observations hold container ids; they are left out)."""
    parts = [traj.task_id] + [
        t.raw if t.parse_error else json.dumps([t.analysis, t.plan, t.commands, t.task_complete])
        for t in traj.turns
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def judge_trial(
    result: Any, traj: Trajectory | None, cfg: Filter, seen: dict[str, str]
) -> tuple[Failure, list[Reason]]:
    """(failure kind, reasons): kind is "" when kept, else "infra", "agent" or "quality"."""
    exc = result.exception_info
    etype = exc.exception_type if exc else None
    if exc and etype not in cfg.agent_error_types:
        return "infra", [
            Reason(rule="infra", detail=f"{etype}: {str(exc.exception_message)[:200]}")
        ]
    reasons: list[Reason] = []
    kind: Failure = "quality"
    if etype:
        kind = "agent"
        if etype != "AgentTimeoutError" or cfg.drop_agent_timeouts:
            reasons.append(Reason(rule="agent_error", detail=str(etype)))
    if traj is None:
        return "infra", [*reasons, Reason(rule="no_trajectory", detail="no ATIF trajectory")]
    for name in cfg.rules:
        reasons += RULES[name](result, traj, cfg)
    if cfg.dedupe and not reasons:
        sig = signature(traj)
        if sig in seen:
            reasons.append(Reason(rule="duplicate", detail=f"same agent turns as {seen[sig]}"))
        else:
            seen[sig] = traj.trial
    return (kind if reasons else ""), reasons


from litecoder.filters import rules as _rules  # noqa: E402,F401  (registers the rules)

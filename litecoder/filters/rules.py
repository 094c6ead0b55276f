"""The filter rules (see `litecoder.filters`): reward, loops (the release's looping filter),
turns, context length and runs of unparseable responses."""

from __future__ import annotations

from collections import Counter
from typing import Any

from litecoder.config import Filter
from litecoder.filters.registry import rule
from litecoder.harbor.runner import reward as trial_reward
from litecoder.records import Reason
from litecoder.trajectory import Trajectory


def _norm(cmd: str) -> str:
    return " ".join(cmd.split())


@rule("reward")
def reward(result: Any, traj: Trajectory, cfg: Filter) -> list[Reason]:
    r = trial_reward(result)
    if r is None or r < cfg.min_reward:
        return [Reason(rule="reward", detail=f"{r} < {cfg.min_reward}")]
    return []


@rule("loop")
def loop(result: Any, traj: Trajectory, cfg: Filter) -> list[Reason]:
    """A command repeated past a count, or a cycle of commands repeating back to back."""
    lr = cfg.loop
    actions = []
    for t in traj.turns:
        if t.parse_error or not t.commands:
            continue
        key = " ; ".join(_norm(c["keystrokes"]) for c in t.commands)
        if lr.with_observation:
            key += " => " + _norm(t.observation)[-500:]
        actions.append(key)
    reasons = [
        Reason(rule="loop", detail=f"command repeated {n} times (> {lr.max_repeats}): {cmd[:80]!r}")
        for cmd, n in Counter(actions).most_common()
        if n > lr.max_repeats
    ]
    for length in range(2, lr.max_cycle_length + 1):
        for start in range(len(actions) - length + 1):
            block = actions[start : start + length]
            if len(set(block)) < 2:  # a single command repeated is the rule above
                continue
            reps = 1
            while actions[start + reps * length : start + (reps + 1) * length] == block:
                reps += 1
            if reps > lr.max_cycle_repeats:
                detail = f"a cycle of {length} commands repeated {reps} times"
                return [*reasons, Reason(rule="loop", detail=detail)]
    return reasons


@rule("turns")
def turns(result: Any, traj: Trajectory, cfg: Filter) -> list[Reason]:
    if len(traj.turns) > cfg.max_turns:
        return [Reason(rule="turns", detail=f"{len(traj.turns)} > {cfg.max_turns}")]
    return []


@rule("context")
def context(result: Any, traj: Trajectory, cfg: Filter) -> list[Reason]:
    peak = max((t.prompt_tokens + t.completion_tokens for t in traj.turns), default=0)
    if peak > cfg.max_context_tokens:
        return [Reason(rule="context", detail=f"{peak} > {cfg.max_context_tokens} tokens")]
    return []


@rule("parse_errors")
def parse_errors(result: Any, traj: Trajectory, cfg: Filter) -> list[Reason]:
    best = run = 0
    for t in traj.turns:
        run = run + 1 if t.parse_error else 0
        best = max(best, run)
    if best > cfg.max_parse_error_run:
        detail = f"{best} unparseable responses in a row (> {cfg.max_parse_error_run})"
        return [Reason(rule="parse_errors", detail=detail)]
    return []

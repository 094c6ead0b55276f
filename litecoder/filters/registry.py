"""The filter rule registry: `rules.py` registers each rule with `@rule(name)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litecoder.records import Reason
from litecoder.trajectory import Trajectory

# (trial result, trajectory, the filter config) -> reasons to reject
RuleFn = Callable[[Any, Trajectory, Any], list[Reason]]
RULES: dict[str, RuleFn] = {}


def rule(name: str) -> Callable[[RuleFn], RuleFn]:
    def register(fn: RuleFn) -> RuleFn:
        RULES[name] = fn
        return fn

    return register

"""The SFT format registry: each format module registers a `Format` here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from litecoder.trajectory.neutral import Trajectory


@dataclass(frozen=True)
class Format:
    name: str
    render: Callable[[Trajectory, bool], dict[str, Any]]
    read_commands: Callable[[dict[str, Any]], list[str]]


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt

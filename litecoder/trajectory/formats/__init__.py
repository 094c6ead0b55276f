"""SFT formats: how a neutral trajectory becomes a chat record, and how a record is read back.

A format is one module here that calls `register` with a `Format`: its name (the key in
`sft.formats`), `render(trajectory, drop_parse_errors) -> record` and
`read_commands(record) -> keystrokes` (the check that a rendering says what the trajectory
did). Import order below is the registry's order.
"""

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


def render(traj: Trajectory, fmt: str, *, drop_parse_errors: bool = True) -> dict[str, Any]:
    """One chat record ({"messages": [...]} plus "tools" for tool formats)."""
    return FORMATS[fmt].render(traj, drop_parse_errors)


def read_commands(record: dict[str, Any], fmt: str) -> list[str]:
    """The keystrokes a rendered record contains, read back with that format's parser."""
    return FORMATS[fmt].read_commands(record)


# The formats (each module registers itself).
from litecoder.trajectory.formats import openai_tools, terminus_json, terminus_xml  # noqa: E402,F401

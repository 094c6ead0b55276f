"""SFT formats: how a neutral trajectory becomes a chat record, and how a record is read back.

A format is one module here that calls `register` with a `Format`: its name (the key in
`sft.formats`), `render(trajectory, drop_parse_errors) -> record` and
`read_commands(record) -> keystrokes` (the check that a rendering says what the trajectory
did). Import order below is the registry's order.
"""

from __future__ import annotations

from typing import Any, Literal

from litecoder.trajectory.formats.registry import FORMATS, Format, register
from litecoder.trajectory.neutral import Trajectory

__all__ = ["FORMATS", "Format", "Reasoning", "read_commands", "register", "render"]


Reasoning = Literal["strip", "keep", "move"]


def render(
    traj: Trajectory, fmt: str, *, drop_parse_errors: bool = True, reasoning: Reasoning = "strip"
) -> dict[str, Any]:
    """One chat record ({"messages": [...]} plus "tools" for tool formats). The model's
    reasoning per turn is left out (strip), kept in the reply as a leading <think> block
    (keep: what a thinking model writes), or moved to the message's `reasoning_content` (move:
    the field Qwen3's and MiniMax-M2's chat templates render)."""
    record = FORMATS[fmt].render(traj, drop_parse_errors)
    if reasoning == "strip":
        return record
    turns = [t for t in traj.turns if not (drop_parse_errors and t.parse_error)]
    replies = [m for m in record["messages"] if m["role"] == "assistant"]
    if len(replies) != len(turns):  # a format that does not map turns one to one
        raise ValueError(f"{fmt}: {len(replies)} replies for {len(turns)} turns")
    for m, t in zip(replies, turns, strict=True):
        if not t.reasoning:
            continue
        if reasoning == "keep":
            m["content"] = f"<think>\n{t.reasoning}\n</think>\n\n{m.get('content') or ''}"
        else:
            m["reasoning_content"] = t.reasoning
    return record


def read_commands(record: dict[str, Any], fmt: str) -> list[str]:
    """The keystrokes a rendered record contains, read back with that format's parser."""
    return FORMATS[fmt].read_commands(record)


# The formats (each module registers itself).
from litecoder.trajectory.formats import openai_tools, terminus_json, terminus_xml  # noqa: E402,F401

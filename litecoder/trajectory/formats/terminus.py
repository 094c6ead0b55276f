"""What Terminus-2's two formats share: its prompt templates (read from Harbor's package) and
the turn-by-turn layout (user: prompt or screen; assistant: the model's structured answer)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from litecoder.trajectory.neutral import Trajectory, Turn

CONFIRM = "Are you sure you want to mark the task as complete?"


@cache
def template(name: str) -> str:
    from harbor.agents import terminus_2

    return (Path(terminus_2.__file__).parent / "templates" / name).read_text()


def observation(obs: str, again: str) -> str:
    """The observation text with the completion question in the target format's words."""
    if CONFIRM in obs:
        obs = (
            obs.split(CONFIRM)[0] + f"{CONFIRM} This will trigger your solution to be graded "
            f"and you won't be able to make any further corrections. If so, {again}"
        )
    return obs


def render(
    traj: Trajectory,
    drop_parse_errors: bool,
    *,
    template_name: str,
    assistant: Callable[[Turn], str],
    again: str,
) -> dict[str, Any]:
    turns = [t for t in traj.turns if not (drop_parse_errors and t.parse_error)]
    prompt = template(template_name).format(
        instruction=traj.instruction, terminal_state=traj.initial_screen
    )
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    for i, t in enumerate(turns):
        messages.append({"role": "assistant", "content": t.raw if t.parse_error else assistant(t)})
        if i < len(turns) - 1:
            messages.append({"role": "user", "content": observation(t.observation, again)})
    return {"messages": messages}


def read_commands(record: dict[str, Any], parser: Any) -> list[str]:
    out: list[str] = []
    for m in record["messages"]:
        if m["role"] == "assistant":
            res = parser.parse_response(m["content"])
            if not res.error:
                out.extend(c.keystrokes for c in res.commands)
    return out

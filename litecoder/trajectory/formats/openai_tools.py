"""`openai_tools`: the assistant calls tools (`bash_command`, `mark_task_complete`); tool
results are `tool` messages."""

from __future__ import annotations

import json
from typing import Any

from litecoder.trajectory.formats.registry import Format, register
from litecoder.trajectory.formats.terminus import observation
from litecoder.trajectory.neutral import Trajectory

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "bash_command",
            "description": "Send keystrokes to the terminal (end a command with a newline) "
            "and wait `duration` seconds before reading the screen.",
            "parameters": {
                "type": "object",
                "properties": {"keystrokes": {"type": "string"}, "duration": {"type": "number"}},
                "required": ["keystrokes"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "mark_task_complete",
            "description": "Declare the task complete (grading follows).",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]
SYSTEM = (
    "You are an AI assistant tasked with solving command-line tasks in a Linux environment. "
    "Use the bash_command tool to type into the terminal and read its screen, and call "
    "mark_task_complete when the task is done."
)
AGAIN = "call mark_task_complete again."


def render(traj: Trajectory, drop_parse_errors: bool) -> dict[str, Any]:
    turns = [t for t in traj.turns if not (drop_parse_errors and t.parse_error)]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": f"Task Description:\n{traj.instruction}\n\n"
            f"Current terminal state:\n{traj.initial_screen}",
        },
    ]
    for i, t in enumerate(turns):
        calls: list[dict[str, Any]] = [
            {
                "id": f"call_{i}_{j}",
                "type": "function",
                "function": {"name": "bash_command", "arguments": json.dumps(c)},
            }
            for j, c in enumerate(t.commands)
        ]
        if t.task_complete:
            calls.append(
                {
                    "id": f"call_{i}_done",
                    "type": "function",
                    "function": {"name": "mark_task_complete", "arguments": "{}"},
                }
            )
        content = f"Analysis: {t.analysis}\nPlan: {t.plan}"
        messages.append({"role": "assistant", "content": content, "tool_calls": calls})
        last = i == len(turns) - 1
        for j, call in enumerate(calls):
            if last and call["function"]["name"] == "mark_task_complete":
                continue
            result = observation(t.observation, AGAIN) if j == len(calls) - 1 else ""
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        if not calls and not last:
            messages.append({"role": "user", "content": observation(t.observation, AGAIN)})
    return {"messages": messages, "tools": TOOLS}


def read_commands(record: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for m in record["messages"]:
        for call in m.get("tool_calls") or []:
            if call["function"]["name"] == "bash_command":
                out.append(json.loads(call["function"]["arguments"])["keystrokes"])
    return out


FORMAT = register(Format("openai_tools", render, read_commands))

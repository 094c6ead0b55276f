"""Trajectories: from Harbor's ATIF files to a scaffold-neutral form, and from that form to
chat records in a chosen scaffold format.

Neutral form (one per trial): the instruction, the initial terminal screen, and turns of
{analysis, plan, commands [{keystrokes, duration}], task_complete, parse_error, observation}.
Formats: `terminus_json` and `terminus_xml` (Terminus-2's own prompt templates and response
formats, read from Harbor's package), and `openai_tools` (assistant tool calls
`bash_command` / `mark_task_complete`, tool results as `tool` messages). Each format has a
parser that reads a rendered record back into commands (Harbor's own Terminus parsers for
the first two), which is how the renderings are checked.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

Format = Literal["terminus_json", "terminus_xml", "openai_tools"]
FORMATS: tuple[Format, ...] = ("terminus_json", "terminus_xml", "openai_tools")
PARSE_ERROR_PREFIX = "Previous response had parsing errors"
_CONFIRM = "Are you sure you want to mark the task as complete?"


@dataclass
class Turn:
    analysis: str = ""
    plan: str = ""
    commands: list[dict[str, Any]] = field(default_factory=list)
    task_complete: bool = False
    parse_error: bool = False
    raw: str = ""  # the model's text when it could not be parsed
    observation: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Trajectory:
    trial: str  # <job>/<trial name>
    task_id: str
    agent: str  # Harbor agent name
    parser: str | None
    instruction: str
    initial_screen: str
    turns: list[Turn]
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        d = dict(d)
        d["turns"] = [Turn(**t) for t in d["turns"]]
        return cls(**d)

    def commands(self) -> list[str]:
        return [c["keystrokes"] for t in self.turns if not t.parse_error for c in t.commands]


def _split_prompt(prompt: str) -> tuple[str, str]:
    head, _, screen = prompt.partition("\nCurrent terminal state:\n")
    instruction = head.split("Task Description:\n", 1)[-1].strip()
    return instruction, screen


def load_atif(trial_dir: Path, job: str) -> Trajectory | None:
    """A Terminus-style ATIF trajectory (agent/trajectory.json) in neutral form."""
    path = trial_dir / "agent" / "trajectory.json"
    if not path.exists():
        return None
    from harbor.models.trajectories import Trajectory as Atif

    atif = Atif.model_validate_json(path.read_text())
    steps = atif.steps
    first_user = next((s for s in steps if s.source == "user"), None)
    instruction, screen = _split_prompt(str(first_user.message if first_user else ""))
    turns: list[Turn] = []
    for s in steps:
        if s.source != "agent":
            continue
        msg = str(s.message or "")
        obs = "\n".join(
            str(r.content or "") for r in (s.observation.results if s.observation else [])
        )
        calls = s.tool_calls or []
        t = Turn(observation=obs)
        if s.metrics:
            t.prompt_tokens = int(s.metrics.prompt_tokens or 0)
            t.completion_tokens = int(s.metrics.completion_tokens or 0)
        if not calls and obs.startswith(PARSE_ERROR_PREFIX):
            t.parse_error, t.raw = True, msg
        else:
            m = re.match(r"(?s)Analysis:\s*(.*?)\nPlan:\s*(.*)", msg)
            t.analysis, t.plan = (
                (m.group(1).strip(), m.group(2).strip()) if m else (msg.strip(), "")
            )
            for c in calls:
                if c.function_name == "bash_command":
                    args = c.arguments or {}
                    t.commands.append(
                        {
                            "keystrokes": str(args.get("keystrokes", "")),
                            "duration": float(args.get("duration", 1.0)),
                        }
                    )
                elif c.function_name == "mark_task_complete":
                    t.task_complete = True
        turns.append(t)
    fm = atif.final_metrics
    extra = atif.agent.extra or {}
    return Trajectory(
        trial=f"{job}/{trial_dir.name}",
        task_id=trial_dir.name.rsplit("__", 1)[0],
        agent=atif.agent.name,
        parser=extra.get("parser"),
        instruction=instruction,
        initial_screen=screen,
        turns=turns,
        prompt_tokens=int(getattr(fm, "total_prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(fm, "total_completion_tokens", 0) or 0),
    )


# --- rendering ----------------------------------------------------------------------------


@cache
def terminus_template(fmt: Format) -> str:
    from harbor.agents import terminus_2

    name = "terminus-json-plain.txt" if fmt == "terminus_json" else "terminus-xml-plain.txt"
    return (Path(terminus_2.__file__).parent / "templates" / name).read_text()


def _confirm(fmt: Format) -> str:
    again = (
        'include "task_complete": true in your JSON response again.'
        if fmt == "terminus_json"
        else "include <task_complete>true</task_complete> again."
    )
    return (
        f"{_CONFIRM} This will trigger your solution to be graded and you won't be able "
        f"to make any further corrections. If so, {again}"
    )


def _observation(obs: str, fmt: Format) -> str:
    """The observation text with the completion question in the target format's words."""
    if _CONFIRM in obs:
        obs = obs.split(_CONFIRM)[0] + _confirm(fmt)
    return obs


def _assistant_terminus(t: Turn, fmt: Format) -> str:
    if fmt == "terminus_json":
        return json.dumps(
            {
                "analysis": t.analysis,
                "plan": t.plan,
                "commands": t.commands,
                "task_complete": t.task_complete,
            },
            indent=2,
            ensure_ascii=False,
        )
    cmds = "".join(
        f'<keystrokes duration="{c["duration"]}">{c["keystrokes"]}</keystrokes>\n'
        for c in t.commands
    )
    done = "<task_complete>true</task_complete>\n" if t.task_complete else ""
    return (
        f"<response>\n<analysis>\n{t.analysis}\n</analysis>\n<plan>\n{t.plan}\n</plan>\n"
        f"<commands>\n{cmds}</commands>\n{done}</response>"
    )


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
TOOLS_SYSTEM = (
    "You are an AI assistant tasked with solving command-line tasks in a Linux environment. "
    "Use the bash_command tool to type into the terminal and read its screen, and call "
    "mark_task_complete when the task is done."
)


def render(traj: Trajectory, fmt: Format, *, drop_parse_errors: bool = True) -> dict[str, Any]:
    """One chat record ({"messages": [...]} plus "tools" for tool formats)."""
    turns = [t for t in traj.turns if not (drop_parse_errors and t.parse_error)]
    if fmt in ("terminus_json", "terminus_xml"):
        prompt = terminus_template(fmt).format(
            instruction=traj.instruction, terminal_state=traj.initial_screen
        )
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        for i, t in enumerate(turns):
            messages.append(
                {
                    "role": "assistant",
                    "content": t.raw if t.parse_error else _assistant_terminus(t, fmt),
                }
            )
            if i < len(turns) - 1:
                messages.append({"role": "user", "content": _observation(t.observation, fmt)})
        return {"messages": messages}
    messages = [
        {"role": "system", "content": TOOLS_SYSTEM},
        {
            "role": "user",
            "content": f"Task Description:\n{traj.instruction}\n\n"
            f"Current terminal state:\n{traj.initial_screen}",
        },
    ]
    for i, t in enumerate(turns):
        calls = [
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
            result = _observation(t.observation, fmt) if j == len(calls) - 1 else ""
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        if not calls and not last:
            messages.append({"role": "user", "content": _observation(t.observation, fmt)})
    return {"messages": messages, "tools": TOOLS}


def read_commands(record: dict[str, Any], fmt: Format) -> list[str]:
    """The keystrokes a rendered record contains, read back with that format's parser."""
    out: list[str] = []
    if fmt == "openai_tools":
        for m in record["messages"]:
            for call in m.get("tool_calls") or []:
                if call["function"]["name"] == "bash_command":
                    out.append(json.loads(call["function"]["arguments"])["keystrokes"])
        return out
    if fmt == "terminus_json":
        from harbor.agents.terminus_2.terminus_json_plain_parser import (
            TerminusJSONPlainParser as Parser,
        )
    else:
        from harbor.agents.terminus_2.terminus_xml_plain_parser import (
            TerminusXMLPlainParser as Parser,
        )
    parser = Parser()
    for m in record["messages"]:
        if m["role"] == "assistant":
            res = parser.parse_response(m["content"])
            if not res.error:
                out.extend(c.keystrokes for c in res.commands)
    return out

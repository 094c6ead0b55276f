"""The scaffold-neutral form of a trajectory, read from Harbor's ATIF files.

One per trial: the instruction, the initial terminal screen, and turns of {analysis, plan,
commands [{keystrokes, duration}], task_complete, parse_error, observation, reasoning}.
Terminus-2's tool calls are keystrokes already; OpenHands' and Claude Code's become the
keystrokes that do the same (litecoder.trajectory.tools).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from litecoder.llm.parse import split_reasoning
from litecoder.trajectory.tools import CONVERTERS, ENDS_WITHOUT_TOOL

PARSE_ERROR_PREFIX = "Previous response had parsing errors"


@dataclass
class Turn:
    analysis: str = ""
    plan: str = ""
    commands: list[dict[str, Any]] = field(default_factory=list)
    task_complete: bool = False
    parse_error: bool = False
    raw: str = ""  # the model's text when it could not be parsed
    reasoning: str = ""  # the model's reasoning (`reasoning_content` or a <think> block)
    skipped_calls: list[str] = field(default_factory=list)  # tools with no shell equivalent
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


def _result_text(r: Any) -> str:
    """A tool result's text; Claude Code's as the tool returned it (Harbor's own content adds
    labelled copies of stdout and metadata)."""
    raw = ((r.extra or {}).get("tool_result_metadata") or {}).get("raw_tool_result")
    if isinstance(raw, dict) and isinstance(raw.get("content"), str):
        return str(raw["content"])
    return str(r.content or "")


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
    agent = atif.agent.name
    convert = CONVERTERS.get(agent)
    turns: list[Turn] = []
    for s in steps:
        if s.source != "agent" or (s.extra or {}).get("is_sidechain"):  # not a sub-agent's
            continue
        msg, reasoning = split_reasoning(str(s.message or ""))
        obs = "\n".join(_result_text(r) for r in (s.observation.results if s.observation else []))
        calls = s.tool_calls or []
        t = Turn(observation=obs, reasoning=str(s.reasoning_content or "") or reasoning)
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
                elif convert is not None:  # another agent's tool: its shell equivalent
                    done = convert(c.function_name, dict(c.arguments or {}))
                    if done is None:
                        t.skipped_calls.append(c.function_name)
                        continue
                    t.commands += [{"keystrokes": k, "duration": 1.0} for k in done.keystrokes]
                    t.analysis = "\n\n".join(x for x in (t.analysis, *done.notes) if x)
                    t.task_complete = t.task_complete or done.complete
        turns.append(t)
    if agent in ENDS_WITHOUT_TOOL and turns and not turns[-1].commands:
        turns[-1].task_complete = True
    fm = atif.final_metrics
    extra = atif.agent.extra or {}
    return Trajectory(
        trial=f"{job}/{trial_dir.name}",
        task_id=trial_dir.name.rsplit("__", 1)[0],
        agent=agent,
        parser=extra.get("parser"),
        instruction=instruction,
        initial_screen=screen,
        turns=turns,
        prompt_tokens=int(getattr(fm, "total_prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(fm, "total_completion_tokens", 0) or 0),
    )

"""A small agent loop for environment preparation.

Each turn the model answers one JSON object `{"thought": ..., "actions": [...]}` with actions
`run` (a command in the sandbox), `write_file` and `finish`; the results are fed back as the
next user message, truncated to a configured size. The loop ends on `finish`, the turn limit,
the token budget, output that stays invalid after re-asks, an LLM error, or a command the
sandbox had to stop (timeout, out of memory, process limit) or that tried to reach the host.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, model_validator

from litecoder.config import AgentSettings
from litecoder.llm import LLMClient, parse_json_as, split_reasoning
from litecoder.sandbox import ExecResult

Status = Literal[
    "finished", "turn_limit", "token_budget", "invalid_output", "llm_error", "violation"
]

# Commands that try to leave the container. The sandbox contains them anyway (no
# capabilities, no socket, no host mounts); this names the attempt and ends the task.
HOST_ESCAPES = [
    (
        re.compile(r"docker\.sock|/var/run/docker|\bdocker\s+(run|exec|ps)\b"),
        "uses the Docker socket",
    ),
    (
        re.compile(r"\bmount\b[^|;&\n]*\s/(\s|$)|\bmount\b[^|;&\n]*--bind\s+/\s"),
        "mounts the host root",
    ),
    (
        re.compile(r"\bnsenter\b|\bunshare\b|/proc/sysrq-trigger|/proc/1/root"),
        "tries to enter host namespaces",
    ),
]


class Action(BaseModel):
    type: Literal["run", "write_file", "finish"]
    command: str | None = None
    path: str | None = None
    content: str | None = None
    summary: str | None = None

    @model_validator(mode="after")
    def _fields(self) -> Action:
        if self.type == "run" and not self.command:
            raise ValueError("a run action needs 'command'")
        if self.type == "write_file" and (not self.path or self.content is None):
            raise ValueError("a write_file action needs 'path' and 'content'")
        return self


class Turn(BaseModel):
    thought: str = ""
    actions: list[Action] = Field(min_length=1)


def parse_turn(text: str) -> Turn:
    return parse_json_as(text, Turn.model_validate)


class Executor(Protocol):
    async def run(self, command: str) -> ExecResult: ...

    async def write_file(self, path: str, content: str) -> str: ...


@dataclass
class AgentResult:
    status: Status
    reason: str = ""
    summary: str = ""
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_s: float = 0.0
    command_s: float = 0.0
    transcript: list[dict[str, Any]] = field(default_factory=list)
    # What the sandbox did to the agent's commands (stray processes stopped, output cut).
    sandbox_events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "finished"


def host_escape(command: str) -> str | None:
    for pattern, what in HOST_ESCAPES:
        if pattern.search(command):
            return what
    return None


def _observe(res: ExecResult, command: str, limit: int) -> str:
    out = res.output
    if len(out) > limit:
        out = out[: limit // 2] + f"\n[... {len(out) - limit} chars cut ...]\n" + out[-limit // 2 :]
    if out and not out.endswith("\n"):
        out += "\n"
    notes = "".join(f"[sandbox: {n}]\n" for n in res.notes())
    return f"$ {command}\n{out}{notes}[exit code {res.exit_code}]"


async def run_agent(
    client: LLMClient,
    settings: AgentSettings,
    system: str,
    user: str,
    executor: Executor,
    *,
    seed: int | None = None,
    meta: dict[str, Any] | None = None,
) -> AgentResult:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
    ]
    result = AgentResult(status="turn_limit", transcript=messages)
    for turn_no in range(settings.max_turns):
        start = time.monotonic()
        out = await client.chat_validated(
            messages,
            parse_turn,
            max_reasks=settings.max_reasks,
            seed=seed,
            meta={**(meta or {}), "turn": turn_no},
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
        )
        result.llm_s += time.monotonic() - start
        result.prompt_tokens += out.prompt_tokens
        result.completion_tokens += out.completion_tokens
        result.turns = turn_no + 1
        if not out.ok:
            result.status = "llm_error" if out.error_kind == "api" else "invalid_output"
            result.reason = out.error or ""
            return result
        assert out.value is not None and out.text is not None
        # The history the model sees again holds its answers, not its reasoning.
        messages.append({"role": "assistant", "content": split_reasoning(out.text)[0]})
        observations = []
        for action in out.value.actions:
            if action.type == "finish":
                result.status, result.summary = "finished", action.summary or ""
                return result
            if action.type == "write_file":
                assert action.path is not None and action.content is not None
                seen = await executor.write_file(action.path, action.content)
                observations.append(seen)
                if seen.startswith("error:"):
                    result.sandbox_events.append(f"write_file {action.path} refused: {seen[7:]}")
                continue
            assert action.command is not None
            t0 = time.monotonic()
            res = await executor.run(action.command)
            result.command_s += time.monotonic() - t0
            observations.append(_observe(res, action.command, settings.observation_chars))
            result.sandbox_events += [f"{n}: {action.command[:120]}" for n in res.notes()]
            escape = host_escape(action.command)
            if res.violation or escape:
                result.status = "violation"
                result.reason = (
                    f"{res.violation or 'command tries to reach the host: ' + str(escape)}: "
                    f"{action.command[:200]}"
                )
                messages.append({"role": "user", "content": "\n\n".join(observations)})
                return result
        messages.append({"role": "user", "content": "\n\n".join(observations)})
        if result.prompt_tokens + result.completion_tokens > settings.max_total_tokens:
            result.status = "token_budget"
            result.reason = (
                f"token budget of {settings.max_total_tokens} used up after {result.turns} turns"
            )
            return result
    result.reason = f"no finish after {settings.max_turns} turns"
    return result

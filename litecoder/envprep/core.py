"""What every envprep step shares: the run's context (config, LLM client, Docker, work area),
hardened sandboxes, the agent-step helper, and the per-task outcome it fills in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from litecoder.config import Config
from litecoder.envprep.agent import AgentResult, run_agent
from litecoder.harbor.runner import Security
from litecoder.llm import LLMClient
from litecoder.sandbox import BuildLimits, Limits, Sandbox, labels


class StepFailed(Exception):
    def __init__(self, step: str, reason: str):
        super().__init__(f"{step}: {reason}")
        self.step, self.reason = step, reason


class Refined(BaseModel):
    instruction: str = Field(min_length=20)
    difficulty: str = "medium"
    category: str = ""
    tags: list[str] = Field(default_factory=list)
    expert_time_estimate_min: float | None = None
    junior_time_estimate_min: float | None = None


class Timings(BaseModel):
    llm_s: float = 0.0
    build_s: float = 0.0
    commands_s: float = 0.0
    validation_s: float = 0.0
    total_s: float = 0.0

    def add_agent(self, r: AgentResult) -> None:
        self.llm_s += r.llm_s
        self.commands_s += r.command_s


class EnvOutcome(BaseModel):
    """One accepted task's end in envprep: a validated environment or the step that failed."""

    task_id: str
    domain: str
    status: str = "failed"  # ok | failed
    step: str | None = None
    reason: str | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
    timings: Timings = Field(default_factory=Timings)
    tokens: dict[str, int] = Field(default_factory=lambda: {"prompt": 0, "completion": 0})
    # What the sandbox refused to copy out of the setup container (path + reason), and what it
    # had to do to the agent's commands (stray processes stopped, output cut).
    capture_refused: list[dict[str, str]] = Field(default_factory=list)
    sandbox_events: list[str] = Field(default_factory=list)

    def record(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["timings"] = {k: round(v, 3) for k, v in d["timings"].items()}
        return d


@dataclass
class EnvprepContext:
    cfg: Config
    client: LLMClient
    docker: Any
    run_id: str
    work: Path

    def security(self) -> Security:
        return Security.from_config(self.cfg)

    def build_limits(self) -> BuildLimits:
        return self.security().build

    def limits(self) -> Limits:
        s, sec = self.cfg.envprep.sandbox, self.cfg.security
        return Limits(
            cpus=s.cpus,
            memory_mb=s.memory_mb,
            pids=s.pids,
            network=s.network,
            command_timeout_s=s.command_timeout_s,
            output_chars=self.cfg.envprep.agent.observation_chars * 4,
            disk_mb=s.disk_mb if sec.disk_quota else None,
            capabilities=tuple(sec.capabilities),
        )

    def sandbox(self, image: str, task_id: str, kind: str = "scratch") -> Sandbox:
        return Sandbox(
            image,
            self.limits(),
            labels(self.run_id, task_id, kind, owner=True),
            client=self.docker,
            workdir="/",
        )

    def prompt(self, step: str, **fields: Any) -> tuple[str, str]:
        p = self.cfg.envprep.prompts
        sp = getattr(p, step)
        actions = p.actions.replace(
            "{command_timeout_s}", str(int(self.cfg.envprep.sandbox.command_timeout_s))
        )
        fields.setdefault("base_image", self.cfg.envprep.base_image.name)
        return sp.system.format(**fields) + "\n\n" + actions, sp.user.format(**fields)

    async def agent_step(
        self, step: str, prompt_key: str, executor: Any, out: EnvOutcome, **fields: Any
    ) -> AgentResult:
        system, user = self.prompt(prompt_key, **fields)
        res = await run_agent(self.client, self.cfg.envprep.agent, system, user, executor)
        out.timings.add_agent(res)
        out.tokens["prompt"] += res.prompt_tokens
        out.tokens["completion"] += res.completion_tokens
        out.sandbox_events += [f"{step}: {e}" for e in res.sandbox_events]
        if not res.ok:
            raise StepFailed(step, f"{res.status}: {res.reason}")
        return res

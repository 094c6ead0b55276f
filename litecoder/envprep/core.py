"""What every envprep step shares: the run's context (config, LLM client, Docker, work area),
hardened sandboxes, the agent-step helper, and the per-task outcome it fills in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from litecoder.config import Config
from litecoder.config.security import BuildSecurity
from litecoder.decontam import BenchmarkIndex
from litecoder.envprep.agent import AgentResult, run_agent
from litecoder.harbor.runner import TrialPolicy
from litecoder.llm import LLMClient
from litecoder.records import EnvOutcome
from litecoder.sandbox import ContainerLimits, Sandbox, labels


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


@dataclass
class EnvprepContext:
    cfg: Config
    client: LLMClient
    docker: Any
    run_id: str
    work: Path
    decontam: BenchmarkIndex | None = None  # benchmark instructions a task must not repeat

    def policy(self) -> TrialPolicy:
        return TrialPolicy.of(self.cfg)

    def build_limits(self) -> BuildSecurity:
        return self.cfg.security.build

    def limits(self) -> ContainerLimits:
        s, sec = self.cfg.envprep.sandbox, self.cfg.security
        return ContainerLimits(
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
        self,
        step: str,
        prompt_key: str,
        executor: Any,
        out: EnvOutcome,
        task_id: str,
        **fields: Any,
    ) -> AgentResult:
        system, user = self.prompt(prompt_key, **fields)
        meta = {
            "stage": "envprep",
            "step": prompt_key,
            "task_id": task_id,
            "base_image": self.cfg.envprep.base_image.name,
        }
        agent = self.cfg.envprep.agent
        res = await run_agent(self.client, agent, system, user, executor, meta=meta)
        out.timings.llm_s += res.llm_s
        out.timings.commands_s += res.command_s
        out.tokens["prompt"] += res.prompt_tokens
        out.tokens["completion"] += res.completion_tokens
        out.sandbox_events += [f"{step}: {e}" for e in res.sandbox_events]
        if not res.ok:
            raise StepFailed(step, f"{res.status}: {res.reason}")
        return res

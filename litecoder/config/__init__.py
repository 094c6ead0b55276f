"""The config: one pydantic model per `conf/` section, composed by `Config`.

`conf/` (Hydra) is the single source of truth. It is composed either by Hydra (CLI, multirun)
or by DVC's Hydra integration into `params.yaml`; both paths end in
`litecoder.config.load.load_config`, which validates the plain dict against these models so
that a typo'd key, a bad type, an unknown domain or a missing endpoint / API key is a one-line
error before any call is made. Each area's schemas live in a module of their own
(`models`, `tasks`, `envprep`, `harbor`, `training`, `security`, `tracking`); none of them
imports litecoder's plugins (filter rules, SFT formats), whose names their registries check
when the config is loaded.

Secrets never appear in config: a teacher names the *environment variable* holding its key
(`api_key_env`), which the LLM client reads at call time.
"""

from __future__ import annotations

from pydantic import ConfigDict, model_validator

from litecoder.config.base import AGENT_ROLES, CONF_DIR_NAME, ConfigError, Strict
from litecoder.config.envprep import (
    AgentSettings,
    BaseImage,
    Capture,
    Envprep,
    SandboxSettings,
    TaskToml,
)
from litecoder.config.harbor import (
    Calibrate,
    Eval,
    EvalAgent,
    EvalModel,
    Rollout,
    RolloutAgent,
    TaskSet,
    TaskSource,
    TrialEnvironment,
)
from litecoder.config.models import LLM, Magpie, Price, RateLimits, Serve, Teacher
from litecoder.config.security import Security
from litecoder.config.tasks import Decontam, Dedup, Domain, Judge, Sampler, Taxonomy
from litecoder.config.tracking import Experiment, Report, Tracking
from litecoder.config.training import ExternalSft, Filter, Sft, Train

__all__ = [
    "AGENT_ROLES",
    "CONF_DIR_NAME",
    "LLM",
    "AgentSettings",
    "BaseImage",
    "Calibrate",
    "Capture",
    "Config",
    "ConfigError",
    "Decontam",
    "Dedup",
    "Domain",
    "Envprep",
    "Eval",
    "EvalAgent",
    "EvalModel",
    "Experiment",
    "ExternalSft",
    "Filter",
    "Judge",
    "Magpie",
    "Price",
    "RateLimits",
    "Report",
    "Rollout",
    "RolloutAgent",
    "Sampler",
    "SandboxSettings",
    "Security",
    "Serve",
    "Sft",
    "Strict",
    "TaskSet", "TaskSource",
    "TaskToml",
    "Taxonomy",
    "Teacher",
    "Tracking",
    "Train",
    "TrialEnvironment",
]  # fmt: skip


class Config(Strict):
    # Sections that later stages own are validated by their own models as they land.
    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: Experiment
    taxonomy: Taxonomy
    models: dict[str, Teacher]
    sampler: Sampler
    judge: Judge
    dedup: Dedup
    tracking: Tracking
    llm: LLM = LLM()
    security: Security = Security()
    environment: TrialEnvironment = TrialEnvironment()
    report: Report = Report()
    envprep: Envprep
    calibrate: Calibrate = Calibrate()
    rollout: Rollout
    filter: Filter
    sft: Sft
    train: Train
    eval: Eval

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.calibrate.role not in self.models:
            raise ValueError(
                f"calibrate.role: {self.calibrate.role!r} is not a model role "
                f"({sorted(self.models)})"
            )
        missing = [r for r in AGENT_ROLES if r not in self.models]
        if missing:
            raise ValueError(f"models: missing role(s) {missing}; expected {list(AGENT_ROLES)}")
        if self.sampler.domains is not None:
            known = set(self.taxonomy.domains)
            for d in self.sampler.domains:
                if d not in known:
                    raise ValueError(
                        f"sampler.domains: unknown domain {d!r} "
                        f"(taxonomy {self.taxonomy.name!r} has {sorted(known)})"
                    )
        return self

    def teacher(self, role: str) -> Teacher:
        return self.models[role]

    def sampled_domains(self) -> dict[str, Domain]:
        names = self.sampler.domains or list(self.taxonomy.domains)
        return {n: self.taxonomy.domains[n] for n in names}

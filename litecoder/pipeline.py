"""The stage contract: every stage's name, code, inputs, outputs, config sections and metrics,
declared once. `Paths`, `dvc.yaml` (`litecoder dvc-yaml`), the missing-input errors and the
W&B lineage all derive from these specs; nothing else names a path of the run directory.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litecoder.config import Config
    from litecoder.context import StageContext


@dataclass(frozen=True)
class Data:
    """A location in the run directory (the repo root under DVC, a job dir under multirun)."""

    path: str  # may name a config value: ${eval.benchmark}
    artifact: str | None = None  # W&B artifact name (lineage); None: not logged
    kind: str = "dataset"  # W&B artifact type
    # The files inside a directory location that other code reads, by role: one name each,
    # for writer and readers alike (`Paths.file`).
    files: Mapping[str, str] = field(default_factory=dict)


DATA: dict[str, Data] = {
    "sampled": Data("data/tasks/sampled.jsonl", "sampled-tasks"),
    "judged": Data("data/tasks/judged.jsonl", "judged-tasks"),
    "accepted": Data("data/tasks/accepted.jsonl", "accepted-tasks"),
    "duplicates": Data("data/tasks/duplicates.jsonl"),
    "envs": Data(
        "data/envs",
        "environments",
        files={"splits": "splits.json", "outcomes": "outcomes.jsonl", "failed": "failed.jsonl"},
    ),
    "calibration": Data("data/calibration", "calibration", files={"pass_rates": "pass_rates.json"}),
    "export": Data("data/export", "harbor-dataset"),
    "rollouts": Data("data/rollouts", "rollouts"),
    "trajectories": Data(
        "data/trajectories",
        "trajectories",
        files={"kept": "kept.jsonl", "rejected": "rejected.jsonl"},
    ),
    "sft": Data(
        "data/sft",
        "sft-dataset",
        files={"train": "train.jsonl", "world_model": "world_model.jsonl", "card": "README.md"},
    ),
    "models": Data("models", "checkpoint", "model", files={"info": "model.json"}),
    "train_loss": Data("plots/train_loss.csv"),
    "results": Data("results/${eval.benchmark}", "eval-results", "results"),
    "scores": Data("results/${eval.benchmark}.json"),
    "reports": Data("reports", "report", "report"),
    "funnel": Data("plots/funnel.csv"),
    "funnel_metrics": Data("metrics/funnel.json"),
}


@dataclass(frozen=True)
class StageSpec:
    name: str
    run: str  # "module:function", imported when the stage runs
    reads: tuple[str, ...]  # DATA names
    writes: tuple[str, ...]  # DATA names (DVC outs)
    params: tuple[str, ...]  # config sections
    # Code the stage runs outside its import closure (another interpreter runs it by path);
    # the rest of its code deps are derived from its imports (`code`).
    runs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()  # DATA names of metrics files besides metrics/<stage>.json
    plots: tuple[str, ...] = ()  # DATA names
    reads_metrics: tuple[str, ...] = ()  # stages whose metrics/<stage>.json it reads
    roles: tuple[str, ...] = ()  # model roles it calls (their endpoints are checked first)
    role_param: str | None = None  # or: the config value that names the role ("calibrate.role")

    def roles_for(self, cfg: Config) -> tuple[str, ...]:
        if self.role_param is None:
            return self.roles
        section, _, key = self.role_param.partition(".")
        return (*self.roles, str(getattr(getattr(cfg, section), key)))

    @property
    def metrics_file(self) -> str:
        return f"metrics/{self.name}.json"

    def function(self) -> Callable[[StageContext], dict[str, Any]]:
        module, _, fn = self.run.partition(":")
        run: Callable[[StageContext], dict[str, Any]] = getattr(importlib.import_module(module), fn)
        return run


def _stage(name: str, *runs: str, **kw: Any) -> StageSpec:
    return StageSpec(name=name, run=f"litecoder.stages.{name}:run", runs=runs, **kw)


STAGES: dict[str, StageSpec] = {
    s.name: s
    for s in (
        _stage(
            "sample",
            reads=(),
            writes=("sampled",),
            # train.python: the student's tokenizer gives MAGPIE its chat template.
            params=("taxonomy", "models.sample", "sampler", "llm", "train.python"),
            roles=("sample",),
        ),
        _stage(
            "judge",
            reads=("sampled",),
            writes=("judged",),
            params=("models.judge", "judge", "llm"),
            roles=("judge",),
        ),
        _stage(
            "dedup",
            reads=("judged",),
            writes=("accepted", "duplicates"),
            params=("dedup",),
        ),
        _stage(
            "envprep",
            reads=("accepted",),
            writes=("envs",),
            params=("models.agent", "envprep", "security", "environment", "llm", "dedup.decontam"),
            roles=("agent",),
        ),
        _stage(
            "calibrate",
            reads=("envs",),
            writes=("calibration", "export"),
            params=(
                "models",
                "calibrate",
                "security",
                "environment",
                "llm",
                "rollout.endpoint_error_types",
                "rollout.model_info",  # through rollout's agent_config
                "eval.infra_error_types",
                "envprep.task.build_timeout_sec",
                "experiment.name",
            ),
            role_param="calibrate.role",
        ),
        _stage(
            "rollout",
            reads=("envs",),
            writes=("rollouts",),
            params=(
                "models.agent",
                "rollout",
                "security",
                "environment",
                "llm",
                "envprep.task.build_timeout_sec",
                "dedup.decontam",  # external task sets are checked against the benchmarks
            ),
            roles=("agent",),
        ),
        _stage(
            "filter",
            reads=("rollouts", "envs"),
            writes=("trajectories",),
            params=("filter",),
        ),
        _stage(
            "sft",
            reads=("trajectories",),
            writes=("sft",),
            # The dataset card names the experiment and the filter and rollout settings.
            params=(
                "sft",
                "dedup.decontam",
                "experiment.name",
                "filter",
                "rollout",
                "train.python",
            ),
        ),
        _stage(
            "train",
            "litecoder/train_env",
            reads=("sft",),
            writes=("models",),
            params=("train", "experiment.name"),
            plots=("train_loss",),
        ),
        _stage(
            "evaluate",
            reads=("models", "envs"),
            writes=("results",),
            params=(
                "eval",
                "security",
                "environment",
                "envprep.task.build_timeout_sec",
                "train.python",
            ),
            metrics=("scores",),
        ),
        _stage(
            "report",
            reads=("sft", "train_loss", "results", "scores"),
            writes=("reports",),
            params=(
                "experiment",
                "eval.benchmark",
                "report",
                "dedup.decontam.benchmarks",
                "calibrate.band",
                "eval.model.source",
                "train.name",
            ),
            metrics=("funnel_metrics",),
            plots=("funnel",),
            reads_metrics=(
                "sample",
                "judge",
                "dedup",
                "envprep",
                "calibrate",
                "rollout",
                "filter",
                "sft",
                "train",
                "evaluate",
            ),
        ),
    )
}
ORDER = list(STAGES)


def producer(name: str) -> str | None:
    """The stage that writes a DATA location (or a metrics file)."""
    for s in STAGES.values():
        if name in s.writes or name in s.metrics or name in s.plots or name == s.metrics_file:
            return s.name
    return None


def resolve(path: str, cfg: Config | None) -> str:
    """A DATA path with its config references filled in."""
    if "${eval.benchmark}" in path:
        if cfg is None:
            raise ValueError(f"{path} needs a config")
        path = path.replace("${eval.benchmark}", cfg.eval.benchmark)
    return path


class Paths:
    """The files of one run, relative to its working directory."""

    def __init__(self, workdir: Path, cfg: Config | None = None):
        self.workdir = workdir
        self.cfg = cfg

    def __getattr__(self, name: str) -> Path:
        if name in DATA:
            return self.workdir / resolve(DATA[name].path, self.cfg)
        raise AttributeError(name)

    def file(self, name: str, role: str) -> Path:
        """A file inside a directory location, by its role (`Data.files`)."""
        files = DATA[name].files
        if role not in files:
            raise KeyError(f"{name} declares no file {role!r} (has: {sorted(files)})")
        where: Path = getattr(self, name)
        return where / files[role]

    def metrics(self, stage: str) -> Path:
        return self.workdir / STAGES[stage].metrics_file

    @property
    def ledger(self) -> Path:
        """What LLM calls of this run directory have cost (the spending guard's run budget)."""
        return self.workdir / ".litecoder" / "spend.json"

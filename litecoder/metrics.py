"""What each stage writes to metrics/<stage>.json, typed.

A field here is a number some other code reads (the report, `litecoder compare`, the funnel);
the rest of a stage's numbers pass through as they are (W&B logs them all). `StageRun.finish`
validates a stage's metrics against its model before writing them, so a stage whose numbers
change shape fails where it writes them, never later in the report; readers get the model
(`load`), not a dict read by string key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Open(BaseModel):
    """Declared fields typed; any other key kept as written."""

    model_config = ConfigDict(extra="allow")


class UsageRow(Open):
    """One `litecoder.llm.usage.Usage` as written (a stage, a teacher, an agent or a trial)."""

    requests: int = 0
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class LLMMetrics(Open):
    """A stage's LLM calls: in all, per teacher, and through a gateway per agent and trial."""

    total: UsageRow | None = None
    by_teacher: dict[str, UsageRow] = Field(default_factory=dict)
    per_agent: dict[str, UsageRow] = Field(default_factory=dict)
    per_trial: dict[str, UsageRow] = Field(default_factory=dict)


class StageMetrics(Open):
    stage: str = ""
    experiment: str = ""
    duration_s: float = 0.0


class Counted(StageMetrics):
    """A funnel stage: its counts per domain (the funnel's columns are read from these)."""

    per_domain: dict[str, dict[str, int]] = Field(default_factory=dict)


class Calling(Counted):
    """A funnel stage that calls a model."""

    llm: LLMMetrics = LLMMetrics()


class SampleMetrics(Calling):
    sampled: int = 0


class JudgeMetrics(Calling):
    accepted: int = 0


class DedupMetrics(Counted):
    kept: int = 0
    contaminated_per_benchmark: dict[str, int] = Field(default_factory=dict)


class EnvprepMetrics(Calling):
    environments: int = 0
    contaminated_per_benchmark: dict[str, int] = Field(default_factory=dict)


class CalibrateMetrics(Calling):
    calibrated: int = 0  # environments given a pass rate (0: the stage was off)
    solver: str | None = None
    k: int = 0
    pass_rate_bins: dict[str, int] = Field(default_factory=dict)
    in_band: int = 0
    exported: int = 0


class RolloutMetrics(Calling):
    trials: int = 0
    # External tasks left out for repeating a benchmark task, per benchmark.
    external_decontam: dict[str, int] = Field(default_factory=dict)


class FilterMetrics(Counted):
    kept: int = 0


class TokenStats(Open):
    mean: float | None = None


class SftMetrics(StageMetrics):
    rows: int = 0
    per_domain: dict[str, int] = Field(default_factory=dict)  # rows per domain
    tokens: TokenStats = TokenStats()
    external_decontam: dict[str, int] = Field(default_factory=dict)


class TrainMetrics(StageMetrics):
    recipe: str | None = None
    base_model: str | None = None
    rows: int | None = None
    steps: int | None = None
    first_loss: float | None = None
    final_loss: float | None = None
    train_seconds: float | None = None


class EvaluateMetrics(StageMetrics):
    benchmark: str = ""
    k: int = 1
    # Per model key (an evaluated endpoint, through its gateway).
    llm: dict[str, LLMMetrics] = Field(default_factory=dict)

    def score(self, key: str, name: str) -> Any:
        """A per-model number, written flat as `<key>/<name>` (e.g. tuned/pass@1)."""
        return (self.model_extra or {}).get(f"{key}/{name}")


class ReportMetrics(StageMetrics):
    report: str = ""
    plots: list[str] = Field(default_factory=list)


MODELS: dict[str, type[StageMetrics]] = {
    "sample": SampleMetrics,
    "judge": JudgeMetrics,
    "dedup": DedupMetrics,
    "envprep": EnvprepMetrics,
    "calibrate": CalibrateMetrics,
    "rollout": RolloutMetrics,
    "filter": FilterMetrics,
    "sft": SftMetrics,
    "train": TrainMetrics,
    "evaluate": EvaluateMetrics,
    "report": ReportMetrics,
}


def check(stage: str, metrics: dict[str, Any]) -> None:
    """Raise (naming the stage and the field) when metrics do not have their declared shape."""
    MODELS[stage].model_validate(metrics)


def load[M: StageMetrics](path: Path, model: type[M]) -> M:
    """A metrics file, typed; an empty one when the stage has not run (or was skipped)."""
    if not path.exists():
        return model()
    return model.model_validate_json(path.read_bytes())

"""The experiment, W&B tracking and the report."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from litecoder.config.base import Strict


class Tracking(Strict):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "litecoder"
    entity: str | None = None
    # W&B group; None: the experiment's name (a multirun sets <experiment>/<sweep>).
    group: str | None = None
    sample_rows: int = Field(default=20, ge=0)


class PublishedScore(Strict):
    model: str
    source: str
    scores: dict[str, float]  # eval.benchmark -> pass@1 in percent


class Report(Strict):
    benchmarks: dict[str, str] = Field(default_factory=dict)  # eval.benchmark -> title
    published: list[PublishedScore] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known(self) -> Report:
        for p in self.published:
            unknown = sorted(set(p.scores) - set(self.benchmarks))
            if unknown:
                raise ValueError(f"published: {p.model!r} scores unknown benchmarks {unknown}")
        return self


class Experiment(Strict):
    name: str
    description: str = ""

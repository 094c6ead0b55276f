"""The stages in order, and the one function that runs a stage for a config."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from litecoder.config import Config
from litecoder.context import StageContext, stage_context
from litecoder.stages import (
    dedup,
    envprep,
    evaluate,
    filter,
    judge,
    report,
    rollout,
    sample,
    sft,
    train,
)

log = logging.getLogger(__name__)

StageFn = Callable[[StageContext], dict[str, Any]]
STAGES: dict[str, StageFn] = {
    "sample": sample.run,
    "judge": judge.run,
    "dedup": dedup.run,
    "envprep": envprep.run,
    "rollout": rollout.run,
    "filter": filter.run,
    "sft": sft.run,
    "train": train.run,
    "evaluate": evaluate.run,
    "report": report.run,
}
ORDER = list(STAGES)


def run_stage(name: str, cfg: Config, *, root: Path, workdir: Path) -> dict[str, Any]:
    log.info("stage %s (experiment %s) in %s", name, cfg.experiment.name, workdir)
    with stage_context(cfg, root, workdir) as ctx:
        metrics = STAGES[name](ctx)
    log.info("stage %s done in %.1fs", name, metrics.get("duration_s", 0.0))
    return metrics

"""`litecoder compare`: sweep members side by side (funnel, dataset size, train loss, pass@1,
pass@k), from their metrics files; also the one-row summary each sweep member logs to W&B."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

from litecoder.io import write_text
from litecoder.metrics import EvaluateMetrics, JudgeMetrics, SampleMetrics, TrainMetrics, load
from litecoder.pipeline import Paths

COLUMNS: list[str] = [
    "member",
    "overrides",
    "sampled",
    "accepted",
    "environments",
    "trials",
    "kept",
    "rows",
    "final_loss",
    "pass@1",
    "pass@k",
    "baseline pass@1",
]


def _load(p: Path) -> dict[str, Any]:
    return json.loads(p.read_text()) if p.exists() else {}


def summarize(workdir: Path) -> dict[str, Any]:
    """One row of key numbers for a run directory (the repo root, or a multirun job dir)."""
    paths = Paths(workdir)
    fun = _load(paths.funnel_metrics).get("total", {})
    if not fun:  # a run stopped before sft (`--until`): what its first stages counted
        fun = {
            "sampled": load(paths.metrics("sample"), SampleMetrics).sampled,
            "accepted": load(paths.metrics("judge"), JudgeMetrics).accepted,
        }
    train = load(paths.metrics("train"), TrainMetrics)
    ev = load(paths.metrics("evaluate"), EvaluateMetrics)
    overrides = workdir / ".hydra/overrides.yaml"
    k = ev.k
    return {
        "member": workdir.name,
        "overrides": " ".join(yaml.safe_load(overrides.read_text()) or [])
        if overrides.exists()
        else "",
        **{
            c: fun.get(c) for c in ("sampled", "accepted", "environments", "trials", "kept", "rows")
        },
        "final_loss": train.final_loss,
        "pass@1": ev.score("tuned", "pass@1"),
        "pass@k": ev.score("tuned", f"pass@{k}"),
        "baseline pass@1": ev.score("baseline", "pass@1"),
    }


def members(paths: list[Path]) -> list[Path]:
    """Run directories: each path itself if it has metrics, else its subdirectories that do."""

    def is_run(d: Path) -> bool:
        return Paths(d).metrics("sample").parent.is_dir()

    out = []
    for p in paths:
        if is_run(p):
            out.append(p)
        else:
            out += sorted(d for d in p.iterdir() if d.is_dir() and is_run(d))
    return out


def compare(paths: list[Path], out: Path | None = None) -> list[dict[str, Any]]:
    rows = [summarize(m) for m in members(paths)]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with (out / "compare.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += [
            "| " + " | ".join("-" if r[c] is None else str(r[c]) for c in COLUMNS) + " |"
            for r in rows
        ]
        write_text(out / "compare.md", "# Sweep comparison\n\n" + "\n".join(lines) + "\n")
    return rows


def log_summary_run(cfg: Any, workdir: Path, group: str) -> None:
    """One W&B run per sweep member (job type `summary`): its config and its row."""
    if cfg.tracking.mode == "disabled":
        return
    import wandb

    row = summarize(workdir)
    run = wandb.init(
        project=cfg.tracking.project,
        entity=cfg.tracking.entity,
        group=group,
        job_type="summary",
        name=f"{group}/{workdir.name}",
        mode=cfg.tracking.mode,
        dir=str(workdir),
        config=cfg.model_dump(mode="json", by_alias=True),
        reinit="create_new",
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    try:
        run.summary.update({k: v for k, v in row.items() if v is not None})
    finally:
        run.finish()


def log_compare_run(cfg: Any, rows: list[dict[str, Any]], group: str, workdir: Path) -> None:
    if cfg.tracking.mode == "disabled" or not rows:
        return
    import wandb

    run = wandb.init(
        project=cfg.tracking.project,
        entity=cfg.tracking.entity,
        group=group,
        job_type="compare",
        name=f"{group}/compare",
        mode=cfg.tracking.mode,
        dir=str(workdir),
        reinit="create_new",
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    try:
        cols: list[str | int] = list(COLUMNS)
        table = wandb.Table(columns=cols, data=[[r[c] for c in COLUMNS] for r in rows])
        run.log({"compare": table})
    finally:
        run.finish()


class SweepCallback:
    """Hydra callback (hydra.callbacks in conf/config.yaml): when a multirun ends, compare its
    members into <sweep dir>/compare.{md,csv} and log the table to W&B."""

    def __init__(self, **_: Any) -> None:
        pass

    def on_multirun_end(self, config: Any, **_: Any) -> None:
        from omegaconf import OmegaConf

        from litecoder.config.load import validate

        sweep = Path(config.hydra.sweep.dir)
        if not sweep.is_dir():
            return
        rows = compare([sweep], out=sweep)
        # Without the hydra node: under a remote launcher (submitit, Ray) its per-job keys
        # (hydra.job.num) are unset in the launching process and cannot be resolved.
        rest = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        data = OmegaConf.to_container(rest, resolve=True)
        assert isinstance(data, dict)
        cfg = validate({str(k): v for k, v in data.items()}, check_env=False)
        log_compare_run(cfg, rows, sweep_group(cfg.experiment.name, sweep), sweep)

    # Hydra calls these too; nothing to do.
    def on_run_start(self, config: Any, **_: Any) -> None:
        pass

    def on_run_end(self, config: Any, **_: Any) -> None:
        pass

    def on_multirun_start(self, config: Any, **_: Any) -> None:
        pass

    def on_job_start(self, config: Any, **_: Any) -> None:
        pass

    def on_job_end(self, config: Any, job_return: Any, **_: Any) -> None:
        pass


def sweep_group(experiment: str, sweep_dir: Path) -> str:
    return f"{experiment}/{sweep_dir.name}"

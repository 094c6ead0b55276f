"""Per-stage bookkeeping: progress bars, `metrics/<stage>.json` and W&B runs.

W&B is offline by default (runs land in `wandb/`, `wandb sync` pushes them later); one group
per experiment, one job type per stage. The config logged is the validated config, which
holds no secrets by construction (teachers name env vars, never keys).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from litecoder import metrics as stage_metrics
from litecoder.config import Config
from litecoder.io import write_json

log = logging.getLogger(__name__)
console = Console(stderr=True)


class RateColumn(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task: Any) -> Any:
        speed = task.finished_speed or task.speed
        return f"{speed:.2f}/s" if speed else "-/s"


class OutageColumn(TextColumn):
    """'endpoint ... down, waiting 12s' while an endpoint's requests wait (llm.breaker)."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task: Any) -> Any:
        from litecoder.llm import outage_status

        status = outage_status()
        return f"[bold red]{status}" if status else ""


@contextmanager
def progress(description: str, total: int) -> Iterator[Any]:
    """A progress bar with counts, rate and ETA; `advance()` per finished item."""
    cols = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        OutageColumn(),
    ]
    with Progress(*cols, console=console, transient=False, disable=total == 0) as p:
        task = p.add_task(description, total=total)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                p.advance(task, n)

        yield _Bar()
    if not sys.stderr.isatty():
        log.info("%s: %d done", description, total)


@dataclass
class StageRun:
    """Collects one stage run's stats; writes metrics and the W&B run at the end."""

    stage: str
    cfg: Config
    workdir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    table: list[dict[str, Any]] = field(default_factory=list)
    histograms: dict[str, list[float]] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def metrics_path(self) -> Path:
        from litecoder.pipeline import Paths

        return Paths(self.workdir).metrics(self.stage)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def finish(self) -> dict[str, Any]:
        self.metrics["duration_s"] = round(time.monotonic() - self.started, 3)
        self.metrics["stage"] = self.stage
        self.metrics["experiment"] = self.cfg.experiment.name
        # The declared shape (litecoder.metrics), checked where the numbers are written.
        stage_metrics.check(self.stage, self.metrics)
        write_json(self.metrics_path, self.metrics)
        log_wandb(
            self.cfg,
            self.stage,
            self.workdir,
            self.metrics,
            self.table,
            self.histograms,
            self.images,
        )
        return self.metrics


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def _artifact(wandb: Any, group: str, name: str, kind: str, path: Path, **meta: Any) -> Any:
    art = wandb.Artifact(f"{group}-{name}".replace("/", "-"), type=kind, metadata=meta)
    # Checksums for files; directories (checkpoints) are referenced by path only.
    art.add_reference(path.resolve().as_uri(), checksum=path.is_file(), max_objects=100_000)
    return art


def log_artifacts(wandb: Any, run: Any, cfg: Config, stage: str, workdir: Path) -> None:
    """Lineage from tasks to scores: online runs `use` their inputs and `log` their outputs;
    offline W&B refuses use_artifact, so the inputs are named in the outputs' metadata."""
    from litecoder.pipeline import DATA, STAGES, resolve

    group = cfg.tracking.group or cfg.experiment.name
    spec = STAGES.get(stage)

    def logged(names: tuple[str, ...]) -> list[tuple[str, str, str]]:
        return [
            (d.artifact, d.kind, resolve(d.path, cfg))
            for d in (DATA[n] for n in names)
            if d.artifact
        ]

    inputs = logged(spec.reads) if spec else []
    outputs = logged(spec.writes) if spec else []
    used = []
    for name, kind, rel in inputs:
        path = workdir / rel
        if not path.exists():
            continue
        used.append(f"{group}-{name}".replace("/", "-"))
        if cfg.tracking.mode == "online":
            run.use_artifact(_artifact(wandb, group, name, kind, path))
    for name, kind, rel in outputs:
        path = workdir / rel
        if path.exists():
            run.log_artifact(
                _artifact(wandb, group, name, kind, path, dvc_path=rel, stage=stage, inputs=used)
            )


def log_wandb(
    cfg: Config,
    stage: str,
    workdir: Path,
    metrics: dict[str, Any],
    rows: list[dict[str, Any]],
    histograms: dict[str, list[float]] | None = None,
    images: dict[str, Path] | None = None,
) -> None:
    t = cfg.tracking
    if t.mode == "disabled":
        return
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=t.project,
        entity=t.entity,
        group=t.group or cfg.experiment.name,
        job_type=stage,
        name=f"{t.group or cfg.experiment.name}-{stage}",
        mode=t.mode,
        dir=str(workdir),
        config=cfg.model_dump(mode="json", by_alias=True),
        reinit="create_new",
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    try:
        run.summary.update(_flatten(metrics))
        log_artifacts(wandb, run, cfg, stage, workdir)
        if rows and t.sample_rows:
            rows = rows[: t.sample_rows]
            cols: list[str | int] = sorted({k for r in rows for k in r})
            table = wandb.Table(
                columns=cols, data=[[str(r.get(str(c), "")) for c in cols] for r in rows]
            )
            run.log({f"{stage}/samples": table})
        for title, path in (images or {}).items():
            run.log({f"{stage}/{title}": wandb.Image(str(path), caption=title)})
        for name, values in (histograms or {}).items():
            if values:
                run.log({f"{stage}/{name}": wandb.Histogram(values)})
    finally:
        run.finish()


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """Group, job type, name, config and summary of an offline W&B run (`wandb/offline-run-*`).

    The `.wandb` file is a LevelDB-style log of protobuf records (32 KiB blocks, 7-byte record
    headers) after a 7-byte file header; W&B ships the protobuf schema but no reader.
    """
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    buf = path.read_bytes()
    block, pos, pending = 32768, 7, b""
    info: dict[str, Any] = {"config": {}, "summary": {}, "artifacts": []}
    while pos + 7 <= len(buf):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", buf[pos : pos + 7])
        data, pos = buf[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (2, 3):  # first / middle fragment
            pending += data
            continue
        if kind == 4:  # last fragment
            data, pending = pending + data, b""
        if kind not in (1, 4):
            continue
        rec = pb.Record()  # type: ignore[attr-defined]
        rec.ParseFromString(data)
        which = rec.WhichOneof("record_type")
        if which == "run":
            info.update(
                group=rec.run.run_group,
                job_type=rec.run.job_type,
                name=rec.run.display_name,
                project=rec.run.project,
            )
            items = rec.run.config.update
        elif which == "config":
            items = rec.config.update
        elif which == "artifact":
            a = rec.artifact
            info["artifacts"].append(
                {"name": a.name, "type": a.type, "metadata": json.loads(a.metadata or "{}")}
            )
            continue
        elif which == "summary":
            for it in rec.summary.update:
                info["summary"][it.key or "/".join(it.nested_key)] = json.loads(it.value_json)
            continue
        else:
            continue
        for it in items:
            if it.key != "_wandb":
                info["config"][it.key] = json.loads(it.value_json)
    return info

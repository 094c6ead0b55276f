"""Stage `envprep`: accepted tasks -> validated Harbor task directories (litecoder.envprep).

Writes data/envs/<task_id>/ for every task that passed, data/envs/failed.jsonl with the step
and the reason for every task that did not, data/envs/outcomes.jsonl (every task: checks,
timings, tokens, what the sandbox refused to copy out and what it did to the agent's
commands) and data/envs/splits.json (train / held-out).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from typing import Any

from litecoder import base_image
from litecoder.context import StageContext
from litecoder.decontam import BenchmarkIndex
from litecoder.envprep.core import EnvprepContext
from litecoder.envprep.prepare import fingerprint, in_shard, prepare_all, remove_stale, split
from litecoder.envprep.validate import CHECKS
from litecoder.harbor import runner
from litecoder.io import write_json, write_jsonl
from litecoder.records import JudgedTask
from litecoder.sandbox import cleanup_on_signals, docker_client, remove_labelled, remove_orphans
from litecoder.sandbox.untrusted import make_private
from litecoder.tracking import StageRun, progress

log = logging.getLogger(__name__)
TIMING_KEYS = ["llm_s", "build_s", "commands_s", "sandbox_s", "validation_s", "total_s"]


def run(ctx: StageContext) -> dict[str, Any]:
    """data/envs/<task_id>/ (Harbor task dirs), failed.jsonl and splits.json from accepted tasks."""
    cfg = ctx.cfg
    track = StageRun("envprep", cfg, ctx.paths.workdir)
    docker = docker_client()  # the environment agent's sandboxes are Docker containers
    runner.preflight_environment(cfg)  # where the oracle check's Harbor trials run
    tasks = ctx.read("accepted", JudgedTask)
    removed = remove_orphans(docker)
    if removed:
        log.info("removed %d container(s) left by an interrupted run", removed)
    base_image.ensure(cfg.envprep.base_image)
    work = ctx.root / ".litecoder" / "envprep"
    make_private(work)
    remove_stale(work)  # half-done tasks of killed runs
    run_id = f"envprep-{uuid.uuid4().hex[:8]}"
    index = BenchmarkIndex.load(cfg.dedup.decontam, ctx.root)
    ep = EnvprepContext(cfg, ctx.client("agent"), docker, run_id, work, index)

    if shard := cfg.envprep.shard_of():
        # One share of the tasks into the shared work area; data/envs is assembled by a run
        # without a shard (which finds this work done and redoes none of it).
        mine = [t for t in tasks if in_shard(t.id, *shard)]
        with cleanup_on_signals(), progress(f"envprep {cfg.envprep.shard}", len(mine)) as bar:
            mine_out = asyncio.run(prepare_all(ep, mine, bar))
        remove_labelled(docker, run=run_id)
        n_ok = sum(o.status == "ok" for o in mine_out)
        log.info(
            "shard %s: %d of %d tasks, %d environments; assemble data/envs with "
            "`litecoder envprep` (no shard) once every shard is done",
            cfg.envprep.shard, len(mine), len(tasks), n_ok,
        )  # fmt: skip
        return {"shard": cfg.envprep.shard, "tasks": len(mine), "environments": n_ok}
    with cleanup_on_signals(), progress("envprep", len(tasks)) as bar:
        outcomes = asyncio.run(prepare_all(ep, tasks, bar))
    if index is not None:  # environments finished before the benchmarks were configured
        for task, out in zip(tasks, outcomes, strict=True):
            instruction = work / fingerprint(cfg, task) / "env" / "instruction.md"
            if out.status == "ok" and (hit := index.match(instruction.read_text())):
                out.status, out.step = "failed", "decontam"
                out.reason = f"repeats {hit.name} ({hit.how} {hit.score})"

    envs = ctx.paths.envs
    if envs.exists():
        shutil.rmtree(envs)
    envs.mkdir(parents=True)
    for task, out in zip(tasks, outcomes, strict=True):
        if out.status == "ok":
            shutil.copytree(
                work / fingerprint(cfg, task) / "env", envs / out.task_id, symlinks=True
            )
    records = [o.record() for o in outcomes]
    write_jsonl(ctx.paths.file("envs", "outcomes"), records)
    failed = [r for r in records if r["status"] != "ok"]
    write_jsonl(ctx.paths.file("envs", "failed"), failed)
    ok_ids = [o.task_id for o in outcomes if o.status == "ok"]
    splits = split(ok_ids, cfg.envprep.heldout_fraction)
    write_json(ctx.paths.file("envs", "splits"), splits.model_dump())
    remove_labelled(docker, run=run_id)

    pass_rates = {}
    for name in CHECKS:
        # None: the check had nothing to try (no near miss written), so it did not run.
        vals = [o.checks[name] for o in outcomes if o.checks.get(name) is not None]
        ok = [v is True or v == 1.0 for v in vals]
        pass_rates[name] = {
            "run": len(vals),
            "passed": sum(ok),
            "rate": round(sum(ok) / len(vals), 4) if vals else None,
        }
    per_domain: dict[str, dict[str, int]] = {}
    for o in outcomes:
        d = per_domain.setdefault(o.domain, {"tasks": 0, "environments": 0})
        d["tasks"] += 1
        d["environments"] += int(o.status == "ok")
    n = max(1, len(outcomes))
    track.metrics.update(
        {
            "tasks": len(outcomes),
            "environments": len(ok_ids),
            "failed": len(failed),
            "failed_by_step": {
                s: sum(1 for f in failed if f["step"] == s)
                for s in sorted({f["step"] for f in failed})
            },
            "train": len(splits.train),
            "heldout": len(splits.heldout),
            "checks": pass_rates,
            "per_domain": per_domain,
            "contaminated_per_benchmark": {
                b: sum(
                    o.step == "decontam" and (o.reason or "").startswith(f"repeats {b}/")
                    for o in outcomes
                )
                for b in cfg.dedup.decontam.benchmarks
            },
            "capture_refused": sum(len(o.capture_refused) for o in outcomes),
            "sandbox_events": sum(len(o.sandbox_events) for o in outcomes),
            "mean_task_timings_s": {
                k: round(sum(getattr(o.timings, k) for o in outcomes) / n, 3) for k in TIMING_KEYS
            },
            "per_task": {
                o.task_id: {
                    "status": o.status,
                    **{k: round(getattr(o.timings, k), 3) for k in TIMING_KEYS},
                }
                for o in outcomes
            },
            "llm": ctx.usage.to_dict(),
        }
    )
    track.table = [
        {
            "task_id": o.task_id,
            "domain": o.domain,
            "status": o.status,
            "step": o.step or "",
            "reason": (o.reason or "")[:300],
        }
        for o in outcomes
    ]
    metrics = track.finish()
    # Tasks the endpoint failed (not the model's doing): the stage is not done with them.
    errors = [o.reason or "" for o in outcomes if (o.reason or "").startswith("llm_error")]
    invalid = sum(
        (o.reason or "").startswith(("invalid_output", "invalid output after")) for o in outcomes
    )
    ctx.check_failures("envprep", errors, len(outcomes), invalid=invalid)
    return metrics

"""Stage `filter`: keep the good trajectories.

Every trial of data/rollouts/* is read from Harbor's own files (result.json, ATIF trajectory)
and lands in data/trajectories/kept.jsonl, or in rejected.jsonl with every reason that applies
(`litecoder.filters`: infrastructure errors kept apart from the agent's own failures, agent
timeouts, reward, loops, turns, context length, unparseable responses, duplicates).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from litecoder.context import StageContext
from litecoder.filters import judge_trial
from litecoder.harbor import runner
from litecoder.harbor.taskdir import litecoder_meta
from litecoder.io import MissingInput, write_records
from litecoder.records import RejectedTrajectory, TrajectoryRecord
from litecoder.tracking import StageRun
from litecoder.trajectory import Trajectory, load_atif


def read_trials(rollouts: Path, envs: Path) -> list[tuple[Any, Trajectory | None, dict[str, Any]]]:
    if not rollouts.is_dir():
        raise MissingInput(f"{rollouts} does not exist (written by stage `rollout`)")
    out = []
    for job in sorted(p for p in rollouts.iterdir() if p.is_dir()):
        info_file = job / runner.JOB_INFO
        job_info: dict[str, Any] = (
            json.loads(info_file.read_text())
            if info_file.exists()  # a Harbor job dir litecoder did not write: <label>-<hash>
            else {"agent": job.name.rsplit("-", 1)[0], "tasks": {}}
        )
        for result in runner.trial_results(job):
            trial_dir = job / result.trial_name
            meta = job_info["tasks"].get(result.task_name)
            info = {
                "job": job.name,
                "agent_label": job_info["agent"],
                "meta": meta if meta is not None else litecoder_meta(envs / result.task_name),
                "security": runner.trial_report(trial_dir),
            }
            out.append((result, load_atif(trial_dir, job.name), info))
    return out


def run(ctx: StageContext) -> dict[str, Any]:
    """data/trajectories/kept.jsonl + rejected.jsonl from data/rollouts."""
    cfg = ctx.cfg.filter
    track = StageRun("filter", ctx.cfg, ctx.paths.workdir)
    trials = read_trials(ctx.paths.rollouts, ctx.paths.envs)
    kept: list[TrajectoryRecord] = []
    rejected: list[RejectedTrajectory] = []
    seen: dict[str, str] = {}
    for result, traj, info in trials:
        kind, reasons = judge_trial(result, traj, cfg, seen)
        rec = TrajectoryRecord(
            trial=f"{info['job']}/{result.trial_name}",
            task_id=result.task_name,
            domain=info["meta"].get("domain", "unknown"),
            agent_label=info["agent_label"],
            reward=runner.reward(result),
            exception=runner.exception_type(result),
            turns=len(traj.turns) if traj else 0,
            security=info["security"],
            trajectory=traj.to_dict() if traj else None,
        )
        if kind:
            rejected.append(RejectedTrajectory(**rec.model_dump(), failure=kind, reasons=reasons))
        else:
            kept.append(rec)
    write_records(ctx.paths.file("trajectories", "kept"), kept)
    write_records(ctx.paths.file("trajectories", "rejected"), rejected)

    per_domain: dict[str, dict[str, int]] = {}
    for r in [*kept, *rejected]:
        d = per_domain.setdefault(r.domain, {"trials": 0, "kept": 0})
        d["trials"] += 1
        d["kept"] += int(not isinstance(r, RejectedTrajectory))
    rule_counts = Counter(reason.rule for r in rejected for reason in r.reasons)
    track.metrics.update(
        {
            "trials": len(trials),
            "kept": len(kept),
            "rejected": len(rejected),
            "rejected_infra": sum(r.failure == "infra" for r in rejected),
            "rejected_agent": sum(r.failure == "agent" for r in rejected),
            "rejected_quality": sum(r.failure == "quality" for r in rejected),
            "rejections_by_rule": dict(rule_counts),
            "keep_rate": round(len(kept) / len(trials), 4) if trials else 0.0,
            "per_domain": per_domain,
            "per_agent": dict(Counter(r.agent_label for r in kept)),
        }
    )
    track.table = [
        {"trial": r.trial, "failure": r.failure, "reasons": "; ".join(map(str, r.reasons))}
        for r in rejected
    ]
    return track.finish()

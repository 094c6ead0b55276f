"""Stage `filter`: keep the good trajectories.

Every trial of data/rollouts/* is read from Harbor's own files (result.json, ATIF
trajectory) and lands in data/trajectories/kept.jsonl, or in rejected.jsonl with every
reason that applies: infrastructure errors (kept apart from the agent's own failures), agent
timeouts, reward below threshold, loops (a command repeated past a count, or a cycle of
commands repeating — the release's filter), too many turns, a context too long for the
target, runs of unparseable responses, and exact duplicates.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from litecoder.config import Filter
from litecoder.context import StageContext
from litecoder.harbor import runner
from litecoder.harbor.taskdir import read_metadata
from litecoder.io import write_jsonl
from litecoder.tracking import StageRun
from litecoder.trajectory import Trajectory, load_atif


def _norm(cmd: str) -> str:
    return " ".join(cmd.split())


def loop_reasons(traj: Trajectory, rule: Any) -> list[str]:
    """The release's looping filter: repeated commands and repeating cycles of commands."""
    actions = []
    for t in traj.turns:
        if t.parse_error or not t.commands:
            continue
        key = " ; ".join(_norm(c["keystrokes"]) for c in t.commands)
        if rule.with_observation:
            key += " => " + _norm(t.observation)[-500:]
        actions.append(key)
    reasons = []
    for cmd, n in Counter(actions).most_common():
        if n > rule.max_repeats:
            reasons.append(f"loop: command repeated {n} times (> {rule.max_repeats}): {cmd[:80]!r}")
    for length in range(2, rule.max_cycle_length + 1):
        for start in range(len(actions) - length + 1):
            block = actions[start : start + length]
            if len(set(block)) < 2:  # a single command repeated is the rule above
                continue
            reps = 1
            while actions[start + reps * length : start + (reps + 1) * length] == block:
                reps += 1
            if reps > rule.max_cycle_repeats:
                reasons.append(f"loop: a cycle of {length} commands repeated {reps} times")
                return reasons
    return reasons


def parse_error_run(traj: Trajectory) -> int:
    best = run = 0
    for t in traj.turns:
        run = run + 1 if t.parse_error else 0
        best = max(best, run)
    return best


def signature(traj: Trajectory) -> str:
    """What the model produced, per turn (observations hold container ids; they are left out)."""
    parts = [traj.task_id] + [
        t.raw if t.parse_error else json.dumps([t.analysis, t.plan, t.commands, t.task_complete])
        for t in traj.turns
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def judge_trial(
    result: Any, traj: Trajectory | None, cfg: Filter, seen: dict[str, str]
) -> tuple[str, list[str]]:
    """(failure kind, reasons): kind is "" when kept, else "infra", "agent" or "quality";
    each reason reads "<rule>: <detail>"."""
    exc = result.exception_info
    etype = exc.exception_type if exc else None
    if exc and etype not in cfg.agent_error_types:
        return "infra", [f"infra: {etype}: {str(exc.exception_message)[:200]}"]
    reasons = []
    kind = "quality"
    if etype:
        kind = "agent"
        if etype != "AgentTimeoutError" or cfg.drop_agent_timeouts:
            reasons.append(f"agent_error: {etype}")
    if traj is None:
        return "infra", [*reasons, "no_trajectory: no ATIF trajectory was written"]
    reward = runner.reward(result)
    if reward is None or reward < cfg.min_reward:
        reasons.append(f"reward: {reward} < {cfg.min_reward}")
    reasons += loop_reasons(traj, cfg.loop)
    if len(traj.turns) > cfg.max_turns:
        reasons.append(f"turns: {len(traj.turns)} > {cfg.max_turns}")
    peak = max((t.prompt_tokens + t.completion_tokens for t in traj.turns), default=0)
    if peak > cfg.max_context_tokens:
        reasons.append(f"context: {peak} > {cfg.max_context_tokens} tokens")
    run = parse_error_run(traj)
    if run > cfg.max_parse_error_run:
        reasons.append(
            f"parse_errors: {run} unparseable responses in a row (> {cfg.max_parse_error_run})"
        )
    if cfg.dedupe and not reasons:
        sig = signature(traj)
        if sig in seen:
            reasons.append(f"duplicate: same agent turns as {seen[sig]}")
        else:
            seen[sig] = traj.trial
    return (kind if reasons else ""), reasons


def read_trials(rollouts: Path, envs: Path) -> list[tuple[Any, Trajectory | None, dict[str, Any]]]:
    out = []
    for job in sorted(p for p in rollouts.iterdir() if p.is_dir()):
        label = job.name.rsplit("-", 1)[0]
        for result in runner.trial_results(job):
            trial_dir = job / result.trial_name
            traj = load_atif(trial_dir, job.name)
            info = {
                "job": job.name,
                "agent_label": label,
                "meta": read_metadata(envs / result.task_name),
                "security": runner.trial_report(trial_dir),
            }
            out.append((result, traj, info))
    return out


def run(ctx: StageContext) -> dict[str, Any]:
    """data/trajectories/kept.jsonl + rejected.jsonl from data/rollouts."""
    cfg = ctx.cfg.filter
    track = StageRun("filter", ctx.cfg, ctx.paths.workdir)
    trials = read_trials(ctx.paths.rollouts, ctx.paths.envs)
    kept, rejected = [], []
    seen: dict[str, str] = {}
    for result, traj, info in trials:
        kind, reasons = judge_trial(result, traj, cfg, seen)
        lit = info["meta"].get("litecoder", {})
        rec = {
            "trial": f"{info['job']}/{result.trial_name}",
            "task_id": result.task_name,
            "domain": lit.get("domain", "unknown"),
            "agent_label": info["agent_label"],
            "reward": runner.reward(result),
            "exception": runner.exception_type(result),
            "turns": len(traj.turns) if traj else 0,
            "security": info["security"],
            "trajectory": traj.to_dict() if traj else None,
        }
        if kind:
            rejected.append({**rec, "failure": kind, "reasons": reasons})
        else:
            kept.append(rec)
    out = ctx.paths.trajectories
    write_jsonl(out / "kept.jsonl", kept)
    write_jsonl(out / "rejected.jsonl", rejected)

    per_domain: dict[str, dict[str, int]] = {}
    for r in kept + rejected:
        d = per_domain.setdefault(r["domain"], {"trials": 0, "kept": 0})
        d["trials"] += 1
        d["kept"] += int("reasons" not in r)
    rule_counts = Counter(reason.split(":", 1)[0] for r in rejected for reason in r["reasons"])
    track.metrics.update(
        {
            "trials": len(trials),
            "kept": len(kept),
            "rejected": len(rejected),
            "rejected_infra": sum(r["failure"] == "infra" for r in rejected),
            "rejected_agent": sum(r["failure"] == "agent" for r in rejected),
            "rejected_quality": sum(r["failure"] == "quality" for r in rejected),
            "rejections_by_rule": dict(rule_counts),
            "keep_rate": round(len(kept) / len(trials), 4) if trials else 0.0,
            "per_domain": per_domain,
            "per_agent": dict(Counter(r["agent_label"] for r in kept)),
        }
    )
    track.table = [
        {"trial": r["trial"], "failure": r["failure"], "reasons": "; ".join(r["reasons"])}
        for r in rejected
    ]
    return track.finish()

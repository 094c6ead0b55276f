"""Stage `rollout`: Harbor trials of the teacher agent over the environments.

The tasks of the chosen split are shared among `rollout.agents` by share (deterministically,
by task hash); each agent is one Harbor job, described by Harbor's own JobConfig and run with
`harbor run -c`, the teacher (`models.agent`) as an OpenAI-compatible endpoint (`api_base`).
Harbor runs each job in the work area (.litecoder/rollout/jobs/<label>-<fingerprint>, the
fingerprint covering config and tasks), so a job that was interrupted is continued with
`harbor job resume` (only the trials without a result run) and sweep members with the same
rollout settings share it; finished jobs are copied to data/rollouts/ exactly as Harbor
wrote them (ATIF trajectories, rewards, results), so Harbor's viewer opens them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from litecoder.config import Config, RolloutAgent, TaskSet
from litecoder.context import StageContext
from litecoder.decontam import BenchmarkIndex, instruction_of
from litecoder.gateway import Gateway
from litecoder.harbor import agents, datasets, runner, validate
from litecoder.harbor.runner import JOB_INFO
from litecoder.harbor.taskdir import litecoder_meta
from litecoder.io import StageError, write_json
from litecoder.records import Splits
from litecoder.sandbox import container_host, docker_client
from litecoder.tracking import StageRun, progress

log = logging.getLogger(__name__)


def assign(task_ids: list[str], agents: list[RolloutAgent]) -> dict[str, list[str]]:
    """Share the tasks among agents by share (largest remainder), stable under reordering."""
    order = sorted(task_ids, key=lambda t: hashlib.sha256(t.encode()).hexdigest())
    total = sum(a.share for a in agents)
    exact = {a.label: len(order) * a.share / total for a in agents}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - counts[k]), k))[
        : len(order) - sum(counts.values())
    ]:
        counts[k] += 1
    out, i = {}, 0
    for a in agents:
        out[a.label] = sorted(order[i : i + counts[a.label]])
        i += counts[a.label]
    return out


def agent_config(
    cfg: Config,
    agent: RolloutAgent,
    api_base: str,
    *,
    stage: str = "rollout",
    role: str = "agent",
    container_base: str = "",
) -> dict[str, Any]:
    """One Harbor AgentConfig: the agent, the role's model and the gateway as its endpoint
    (`container_base`, the gateway's bridge address, for agents inside the container)."""
    teacher = cfg.teacher(role)
    kwargs = dict(agent.kwargs)
    if agents.kind(agent.name).wiring == "terminus" and cfg.rollout.model_info:
        kwargs.setdefault("model_info", cfg.rollout.model_info)
    # What the agent's requests are, as metadata (see litecoder.llm.META_HEADER).
    meta = {"stage": stage, "agent": agent.label, "parser": kwargs.get("parser_name")}
    model = agent.model or teacher.model
    return {
        "name": agent.name,
        "model_name": f"{teacher.litellm_provider}/{model}",
        "kwargs": agents.wire(
            agent.name, kwargs, loopback=api_base, container=container_base, meta=meta
        ),
    }


def job_config(
    cfg: Config,
    agents: list[RolloutAgent],
    task_dirs: list[Path],
    jobs_dir: Path,
    job_name: str,
    api_base: str,
) -> dict[str, Any]:
    """The Harbor JobConfig of a rollout job: every agent on every (staged) task."""
    r = cfg.rollout
    return runner.job_config(
        job_name=job_name,
        jobs_dir=jobs_dir,
        agents=[agent_config(cfg, a, api_base) for a in agents],
        tasks=task_dirs,
        n_attempts=r.n_attempts,
        n_concurrent=cfg.environment.n_concurrent or r.n_concurrent,
        timeout_multiplier=r.timeout_multiplier,
        agent_timeout_multiplier=r.agent_timeout_multiplier,
        environment=runner.environment_config(cfg),
    )


def fingerprint(cfg: Config, agent: RolloutAgent, task_dirs: list[Path]) -> str:
    teacher = cfg.teacher("agent").model_dump(
        exclude={"limits", "base_url", "timeout_s", "max_wait_s", "preflight"}
    )
    payload = {
        "agent": agent.model_dump(),
        "teacher": teacher,
        "rollout": cfg.rollout.model_dump(exclude={"agents", "n_concurrent", "harbor_timeout_s"}),
        "tasks": [[d.name, litecoder_meta(d).get("fingerprint")] for d in task_dirs],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]


def teacher_env(cfg: Config, token: str) -> dict[str, str]:
    """Environment of the Harbor process (nothing else of this process's, see
    `runner.harbor_env`): every agent reaches the teacher through the gateway with the job's
    gateway token as its key. The real key stays in this process."""
    return runner.harbor_env(pass_env=cfg.environment.pass_env, OPENAI_API_KEY=token)


def external_tasks(cfg: Config, ts: TaskSet, root: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """An external task set's dirs that pass litecoder's static checks, and the others with
    their findings (left out, never run)."""
    datasets.preflight(ts, root)
    found = datasets.tasks(ts, root, root / ".litecoder" / "rollout")
    if ts.max_tasks:
        found = found[: ts.max_tasks]
    ok, bad = [], []
    index = BenchmarkIndex.load(cfg.dedup.decontam, root)
    for d in found:
        report = validate.static(d, allow_network=cfg.rollout.network_available)
        text = instruction_of(d) if index is not None else None
        if index is not None and text and (hit := index.match(text)):
            report.add("decontam", [f"repeats {hit.name} ({hit.how} {hit.score})"])
        if report.ok:
            ok.append(d.resolve())
        else:
            bad.append(report.to_dict())
    log.info("task set %s: %d usable, %d left out (see metrics)", ts.name, len(ok), len(bad))
    return ok, bad


def run(ctx: StageContext) -> dict[str, Any]:
    """data/rollouts/<job>/ (Harbor job dirs) from data/envs and the teacher."""
    cfg = ctx.cfg
    track = StageRun("rollout", cfg, ctx.paths.workdir)
    local = cfg.environment.local
    if local:
        docker_client()  # a clear error now if Docker is not there
    runner.preflight_environment(cfg)  # credentials and reachability, before any trial
    envs = ctx.paths.envs
    # Task sources: this run's environments and/or external task sets, each shared among the
    # agents; one Harbor job per (source, agent). Task metadata (the domain) per job.
    sources: list[tuple[str | None, list[Path], dict[str, dict[str, Any]]]] = []
    if cfg.rollout.use_envs:
        splits = ctx.read_one("envs", Splits, "splits")
        ids = splits.train + (splits.heldout if cfg.rollout.split == "all" else [])
        dirs = [(envs / t).resolve() for t in ids]
        sources.append((None, dirs, {d.name: litecoder_meta(d) for d in dirs}))
    rejected: dict[str, list[dict[str, Any]]] = {}
    for ts in cfg.rollout.external:
        dirs, bad = external_tasks(cfg, ts, ctx.root)
        rejected[ts.name] = bad
        meta = {d.name: {"domain": f"external/{ts.name}", "source": ts.name} for d in dirs}
        sources.append((ts.name, dirs, meta))
    if not any(dirs for _, dirs, _ in sources):
        raise StageError("rollout has no tasks (no environments and no usable external task)")
    kinds = [agents.check(a.name, local=cfg.environment.local) for a in cfg.rollout.agents]
    work = ctx.root / ".litecoder" / "rollout"
    jobs_dir = work / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    gateway = Gateway(
        lambda: ctx.client("agent", cached=False, share_identical=False),
        models=[a.model for a in cfg.rollout.agents if a.model],
        container_host=container_host() if any(k.in_container for k in kinds) else None,
    )

    jobs = []
    task_meta: dict[str, dict[str, dict[str, Any]]] = {}  # job -> task -> metadata
    for set_name, all_dirs, meta in sources:
        by_name = {d.name: d for d in all_dirs}
        shares = assign(sorted(by_name), cfg.rollout.agents)
        for agent in cfg.rollout.agents:
            dirs = [by_name[t] for t in shares[agent.label]]
            if not dirs:
                continue
            tag = f"{agent.label}-{set_name}" if set_name else agent.label
            name = f"{tag}-{fingerprint(cfg, agent, dirs)}"
            jobs.append((agent, dirs, name))
            task_meta[name] = {d.name: meta.get(d.name, {}) for d in dirs}

    expected_total = sum(len(d) * cfg.rollout.n_attempts for _, d, _ in jobs)
    harbor_s = 0.0
    resumed = 0
    r = cfg.rollout
    with gateway, progress("rollout", expected_total) as bar:
        api_base = gateway.base_url
        for agent, dirs, name in jobs:
            # Trials the endpoint failed are not results: they run again. A job resumed under
            # another gateway address is pointed at this one (runner.rebind).
            _, secs, again = runner.run_job(
                name=name,
                jobs_dir=jobs_dir.resolve(),
                work=work,
                tasks=dirs,
                agents=[agent_config(cfg, agent, api_base, container_base=gateway.container_url)],
                n_attempts=r.n_attempts,
                n_concurrent=cfg.environment.n_concurrent or r.n_concurrent,
                env=teacher_env(cfg, gateway.issue_token(name, agent.label)),
                policy=runner.TrialPolicy.of(
                    cfg,
                    network=agent.needs_network,
                    agent_network=agents.kind(agent.name).in_container,
                ),
                environment=runner.environment_config(cfg),
                build_timeout_s=cfg.envprep.task.build_timeout_sec,
                harbor_timeout_s=r.harbor_timeout_s,
                rerun_types=r.endpoint_error_types,
                timeout_multiplier=r.timeout_multiplier,
                agent_timeout_multiplier=r.agent_timeout_multiplier,
                bar=bar,
                local=local,
            )
            harbor_s += secs
            resumed += int(again)

    rollouts = ctx.paths.rollouts
    if rollouts.exists():
        shutil.rmtree(rollouts)
    rollouts.mkdir(parents=True)
    for agent, _, name in jobs:
        shutil.copytree(jobs_dir / name, rollouts / name, symlinks=True)
        # Who ran the job and what its tasks are (filter reads it; external tasks have no
        # environment under data/envs to ask).
        write_json(rollouts / name / JOB_INFO, {"agent": agent.label, "tasks": task_meta[name]})

    # Statistics from Harbor's own results.
    trials: list[dict[str, Any]] = []
    for agent, _dirs, name in jobs:
        for r in runner.trial_results(rollouts / name):
            meta = task_meta[name].get(r.task_name, {})
            report = runner.trial_report(rollouts / name / r.trial_name)
            trials.append(
                {
                    "agent": agent.label,
                    "domain": meta.get("domain", "?"),
                    "reward": runner.reward(r),
                    "exception": runner.exception_type(r),
                    "seconds": _seconds(r.started_at, r.finished_at),
                    "sanitized": len(report.get("sanitized", [])),
                    "limits_hit": sorted(k for k, v in report.get("limits", {}).items() if v),
                }
            )
    per_agent: dict[str, dict[str, Any]] = {}
    per_domain: dict[str, dict[str, Any]] = {}
    for t in trials:
        for key, table in ((t["agent"], per_agent), (t["domain"], per_domain)):
            d = table.setdefault(key, {"trials": 0, "solved": 0, "errors": 0})
            d["trials"] += 1
            d["solved"] += int(t["reward"] == 1.0)
            d["errors"] += int(bool(t["exception"]))
    n = max(1, len(trials))
    wall = track.elapsed()
    mean_trial = sum(t["seconds"] for t in trials) / n
    track.metrics.update(
        {
            "trials": len(trials),
            "expected_trials": expected_total,
            "solved": sum(t["reward"] == 1.0 for t in trials),
            "mean_reward": round(sum(t["reward"] or 0.0 for t in trials) / n, 4),
            "errors": sum(bool(t["exception"]) for t in trials),
            "errors_by_type": dict(Counter(t["exception"] for t in trials if t["exception"])),
            "jobs": [name for _, _, name in jobs],
            "external_tasks": {
                ts: sum(len(d) for n, d, _ in sources if n == ts) for ts in rejected
            },
            "external_rejected": rejected,
            # External tasks left out because they repeat a benchmark task, per benchmark.
            "external_decontam": _decontam_counts(rejected),
            "resumed_jobs": resumed,
            "per_agent": per_agent,
            "per_domain": per_domain,
            # What litecoder had to do about the trial containers (README, Security).
            "sanitized_files": sum(t["sanitized"] for t in trials),
            "trials_hitting_limits": dict(Counter(k for t in trials for k in t["limits_hit"])),
            # Every LLM call of the agents, through the gateway: tokens and cost.
            "llm": gateway.summary(),
            "timing": {
                "stage_wall_s": round(wall, 2),
                "harbor_wall_s": round(harbor_s, 2),
                "litecoder_overhead_s": round(wall - harbor_s, 2),
                "mean_harbor_trial_s": round(mean_trial, 2),
                "litecoder_overhead_per_trial_s": round((wall - harbor_s) / n, 3),
            },
        }
    )
    track.table = [{k: str(v) for k, v in t.items()} for t in trials]
    metrics = track.finish()
    failed = [
        str(t["exception"]) for t in trials if t["exception"] in cfg.rollout.endpoint_error_types
    ]
    ctx.check_failures("rollout", failed, len(trials))
    return metrics


def _decontam_counts(rejected: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    hits = [
        f["problem"].removeprefix("repeats ").split("/")[0]
        for bad in rejected.values()
        for r in bad
        for f in r["findings"]
        if f["check"] == "decontam"
    ]
    return dict(Counter(hits))


def _seconds(a: Any, b: Any) -> float:
    return (b - a).total_seconds() if a and b else 0.0

"""Stage `evaluate`: score models on a terminal benchmark with Harbor, honestly.

What is scored (`eval.model`): the checkpoint `train` wrote and its untuned base (default), a
local model directory or a Hub id (each served on loopback by the stage: `transformers serve`
on CPU, vLLM on GPU), or an OpenAI-compatible endpoint that is already running. On what
(`eval.source`, litecoder.harbor.datasets): the held-out split of data/envs, a Harbor registry
dataset, the original Terminal-Bench registry (migrated), or task dirs on disk. With several
`eval.agents` each model is scored under each scaffold, side by side.

Scoring: each task gets k attempts. A trial that did not finish for a reason outside the model
(an environment or endpoint failure: `eval.infra_error_types`, or no result at all) is counted
apart and never as a failure; the stage fails when more than `eval.max_unfinished_fraction`
of the trials are missing. pass@1 is the mean reward over a task's finished attempts averaged
over tasks, pass@k the unbiased estimator, with a bootstrap 95% interval over tasks; beside
them what the agent did (turns that parsed, turns and commands per trial). Harbor
jobs live in `.litecoder/evaluate/jobs/` and a killed evaluation resumes them (`harbor job
resume`): finished trials are not run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litecoder import models
from litecoder.config import Config, EvalAgent, Teacher
from litecoder.context import StageContext
from litecoder.gateway import Gateway
from litecoder.harbor import agents, datasets, runner
from litecoder.harbor.taskdir import content_hash
from litecoder.io import StageError, write_json
from litecoder.records import ModelInfo, Splits
from litecoder.sandbox import container_host, docker_client
from litecoder.serve import serve
from litecoder.tracking import StageRun, progress
from litecoder.trajectory import load_atif

log = logging.getLogger(__name__)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n attempts with c successes (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# --- what is scored ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    label: str
    model: str  # a path or Hub id to serve, or the endpoint's model name
    endpoint: str | None = None  # base URL of a running endpoint (then nothing is served)
    api_key_env: str | None = None

    def identity(self, root: Path) -> str:
        """What makes two evaluations of this target the same (a resumable job)."""
        p = Path(self.model) if Path(self.model).is_absolute() else root / self.model
        if self.endpoint is None and p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
            stamp = [(str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
            return hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
        return f"{self.endpoint}:{self.model}"


def targets(ctx: StageContext) -> list[Target]:
    m, cfg = ctx.cfg.eval.model, ctx.cfg.eval
    if m.source == "checkpoint":
        info = ctx.read_one("models", ModelInfo, "info")
        out = [Target(m.label or "tuned", _local(ctx, info.checkpoint))]
        if cfg.baseline:
            out.append(Target("baseline", _local(ctx, info.base_model)))
        return out
    if m.source == "local":
        assert m.path is not None
        p = Path(m.path) if Path(m.path).is_absolute() else ctx.root / m.path
        if not p.is_dir():
            raise StageError(f"eval.model.path {p} is not a model directory")
        return [Target(m.label or p.name, str(p.resolve()))]
    if m.source == "hub":
        assert m.path is not None
        path = models.resolve_with(m.path, ctx.cfg.train.python, ctx.root)
        return [Target(m.label or m.path.split("/")[-1].removesuffix(".gguf"), path)]
    assert m.base_url and m.name
    if m.api_key_env and not os.environ.get(m.api_key_env):
        raise StageError(f"eval.model.api_key_env: {m.api_key_env} is not set")
    return [Target(m.label or m.name, m.name, m.base_url.rstrip("/"), m.api_key_env)]


def _local(ctx: StageContext, model: str) -> str:
    if models.parse(model):  # a packaged model: its converted directory
        return models.resolve_with(model, ctx.cfg.train.python, ctx.root)
    path = ctx.paths.workdir / model
    return str(path) if path.exists() else model


@dataclass
class Served:
    """Where a job's agents reach the model: `api_base` (loopback), `container_base` (for an
    agent inside the container), the name it serves, the key Harbor's process gets, and the
    gateway in front of an endpoint (None for a model served here, which has no key)."""

    api_base: str
    model: str
    key: str
    container_base: str = ""
    gateway: Gateway | None = None


def eval_teacher(cfg: Config, t: Target) -> Teacher:
    """The endpoint under evaluation as a client-layer model (its limits, price and key)."""
    m = cfg.eval.model
    return Teacher(
        name=f"eval-{t.label}",
        model=t.model,
        base_url=t.endpoint,
        api_key_env=t.api_key_env,
        sampling_mode="chat",
        chat_task_prompt="(evaluation: not used)",  # the agents write every request
        limits=m.limits,
        price=m.price,
        preflight=False,
    )


@contextmanager
def endpoint(ctx: StageContext, t: Target, agent: EvalAgent, log_path: Path) -> Iterator[Served]:
    """How a job reaches a target: its endpoint behind a gateway (the real key stays in this
    process; the agents get a token), or a server started here for it."""
    # Any free port: a resumed Harbor job is pointed at this run's (runner.rebind), and sweep
    # members of one project evaluate side by side.
    if t.endpoint is not None:
        teacher, base = eval_teacher(ctx.cfg, t), t.endpoint
        gateway = Gateway(
            lambda: ctx.client_of(teacher, base, cached=False, share_identical=False),
            container_host=container_host() if agents.kind(agent.name).in_container else None,
        )
        with gateway:
            token = gateway.issue_token(t.label, agent.tag)
            yield Served(gateway.base_url, t.model, token, gateway.container_url, gateway)
        return
    if agents.kind(agent.name).in_container:
        raise StageError(
            f"eval agent {agent.tag!r} runs inside the trial container, which cannot reach a "
            "model served on this host's loopback: evaluate it as an endpoint "
            "(eval.model.source=endpoint)"
        )
    with serve(t.model, ctx.cfg.eval.serve, ctx.root, log_path) as (base, served):
        yield Served(base, served, "EMPTY")


# --- Harbor -----------------------------------------------------------------------------------


def job_agent(cfg: Config, served: Served, agent: EvalAgent) -> dict[str, Any]:
    """The Harbor AgentConfig of a job: the scaffold, pointed at the served model."""
    kwargs = dict(agent.kwargs)
    if agents.kind(agent.name).wiring == "terminus" and cfg.eval.model_info:
        kwargs.setdefault("model_info", cfg.eval.model_info)
    # Through the gateway (an endpoint): trials named in a header, for per-trial accounting.
    wired = agents.wire(
        agent.name, kwargs, loopback=served.api_base, container=served.container_base,
        trial_header=served.gateway is not None,
    )  # fmt: skip
    return {"name": agent.name, "model_name": f"openai/{served.model}", "kwargs": wired}


def job_name(
    cfg: Config, key: str, t: Target, agent: EvalAgent, tasks: list[Path], root: Path
) -> str:
    payload = {
        "eval": cfg.eval.model_dump(
            include={"k", "agent_timeout_multiplier", "model_info", "benchmark"}
        ),
        "agent": agent.model_dump(),
        "model": t.identity(root),
        "tasks": [[d.name, content_hash(d)] for d in tasks],
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]
    return f"{key.replace('@', '__')}-{digest}"


def run_job(
    ctx: StageContext,
    t: Target,
    agent: EvalAgent,
    key: str,
    tasks: list[Path],
    jobs_dir: Path,
    out: Path,
    bar: Any,
) -> tuple[Path, dict[str, Any] | None]:
    """One model under one scaffold: a Harbor job run (or resumed) to the end; with its
    gateway's accounts (an endpoint's tokens and cost, per trial) when there was one."""
    cfg, e = ctx.cfg, ctx.cfg.eval
    name = job_name(cfg, key, t, agent, tasks, ctx.root)
    # Trials that did not finish for outside reasons run again; the others are kept. A job
    # with every result starts no model.
    if runner.finished(jobs_dir / name, e.infra_error_types, len(tasks) * e.k):
        bar.advance(len(tasks) * e.k)
        return jobs_dir / name, None
    with endpoint(ctx, t, agent, out / f"serve-{t.label}.log") as served:
        # Scored whatever Harbor's exit: what did not finish is counted apart (and the stage
        # fails when that is too much); the job's log says why.
        job_dir, _, _ = runner.run_job(
            name=name,
            jobs_dir=jobs_dir,
            work=jobs_dir.parent,
            tasks=tasks,
            agents=[job_agent(cfg, served, agent)],
            n_attempts=e.k,
            n_concurrent=cfg.environment.n_concurrent or e.n_concurrent,
            env=runner.harbor_env(pass_env=cfg.environment.pass_env, OPENAI_API_KEY=served.key),
            policy=runner.TrialPolicy.of(
                cfg, network=e.network, agent_network=agents.kind(agent.name).in_container
            ),
            environment=runner.environment_config(cfg),
            build_timeout_s=cfg.envprep.task.build_timeout_sec,
            harbor_timeout_s=e.harbor_timeout_s,
            rerun_types=e.infra_error_types,
            agent_timeout_multiplier=e.agent_timeout_multiplier,
            bar=bar,
            local=cfg.environment.local,
            partial_ok=True,
        )
        return job_dir, served.gateway.summary() if served.gateway else None


# --- scoring ----------------------------------------------------------------------------------


def score(
    results: list[Any],
    *,
    k: int,
    tasks: list[str],
    infra_error_types: list[str],
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """pass@1 / pass@k over the trials that finished; the others counted apart."""
    per_task: dict[str, list[float]] = {t: [] for t in tasks}
    unfinished: dict[str, int] = {}
    for r in results:
        kind = runner.exception_type(r)
        if kind in infra_error_types:
            unfinished[kind or ""] = unfinished.get(kind or "", 0) + 1
            continue
        per_task.setdefault(r.task_name, []).append(runner.reward(r) or 0.0)
    finished = sum(len(v) for v in per_task.values())
    expected = len(tasks) * k
    missing = max(0, expected - finished - sum(unfinished.values()))
    if missing:
        unfinished["no result (killed or never started)"] = missing
    scored = {t: rs for t, rs in sorted(per_task.items()) if rs}
    table: dict[str, dict[str, Any]] = {
        t: {
            "rewards": rs,
            "pass@1": sum(rs) / len(rs),
            f"pass@{k}": pass_at_k(len(rs), sum(1 for x in rs if x >= 1.0), min(k, len(rs))),
        }
        for t, rs in scored.items()
    }
    p1 = [v["pass@1"] for v in table.values()]
    pk = [v[f"pass@{k}"] for v in table.values()]
    return {
        "pass@1": round(_mean(p1), 4),
        f"pass@{k}": round(_mean(pk), 4),
        "pass@1_ci95": _bootstrap(p1, bootstrap, seed),
        "tasks": len(tasks),
        "tasks_scored": len(table),
        "trials": finished,
        "expected_trials": expected,
        "unfinished": sum(unfinished.values()),
        "unfinished_by_type": unfinished,
        "per_task": table,
    }


def behaviour(job_dir: Path) -> dict[str, Any]:
    """What the agent did, which moves even when no task is solved: the share of its turns
    that parsed under the scaffold's format, mean turns and commands per trial."""
    loaded = [load_atif(d, job_dir.name) for d in sorted(job_dir.iterdir()) if d.is_dir()]
    trajs = [t for t in loaded if t is not None]
    turns = [len(t.turns) for t in trajs]
    parsed = sum(not x.parse_error for t in trajs for x in t.turns)
    return {
        "parsed_turns": round(parsed / sum(turns), 4) if sum(turns) else None,
        "mean_turns": round(_mean([float(n) for n in turns]), 2),
        "commands_per_trial": round(_mean([float(len(t.commands())) for t in trajs]), 2),
        "trajectories": len(trajs),
    }


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _bootstrap(xs: list[float], n: int, seed: int) -> list[float] | None:
    """A percentile 95% interval of the mean over tasks (tasks resampled with replacement)."""
    if not xs or n <= 0:
        return None
    rng = random.Random(seed)
    means = sorted(_mean(rng.choices(xs, k=len(xs))) for _ in range(n))
    return [round(means[int(0.025 * (n - 1))], 4), round(means[int(0.975 * (n - 1))], 4)]


# --- the stage --------------------------------------------------------------------------------


def task_dirs(ctx: StageContext) -> list[Path]:
    cfg = ctx.cfg
    if cfg.eval.source == "local":
        splits = ctx.read_one("envs", Splits, "splits")
        tasks = [(ctx.paths.envs / t).resolve() for t in splits.heldout]
        if not tasks:
            raise StageError("the held-out split is empty: raise envprep.heldout_fraction")
        return tasks
    tasks = datasets.tasks(cfg.eval, ctx.root, ctx.root / ".litecoder" / "evaluate")
    if cfg.eval.expected_tasks and len(tasks) != cfg.eval.expected_tasks:
        raise StageError(
            f"{cfg.eval.benchmark}: {len(tasks)} tasks where {cfg.eval.expected_tasks} are "
            "expected (eval.expected_tasks): the dataset is not the one the scores compare to"
        )
    return [t.resolve() for t in tasks]


def run(ctx: StageContext) -> dict[str, Any]:
    """results/<benchmark>.json: pass@1, pass@k and a 95% interval per model and scaffold."""
    cfg = ctx.cfg
    e = cfg.eval
    track = StageRun("evaluate", cfg, ctx.paths.workdir)
    if cfg.environment.local:
        docker_client()
    runner.preflight_environment(cfg)
    for a in e.agents:  # each reaches the model through the gateway or a server here, or not at all
        agents.check(a.name, local=cfg.environment.local)
    datasets.preflight(e, ctx.root)  # before any model is loaded
    chosen = targets(ctx)
    tasks = task_dirs(ctx)
    # A task litecoder will not run (it could reach the host) is reported, never run.
    refused = {d.name: why for d in tasks if (why := runner.refusals(d))}
    for name, why in refused.items():
        log.warning("%s is not run: %s", name, "; ".join(why))
    tasks = [d for d in tasks if d.name not in refused]
    if not tasks:
        raise StageError(f"{e.benchmark}: every task was refused (e.g. {next(iter(refused))})")
    out = ctx.paths.results
    out.mkdir(parents=True, exist_ok=True)
    work = ctx.root / ".litecoder" / "evaluate"
    jobs_dir = (work / "jobs").resolve()
    jobs_dir.mkdir(parents=True, exist_ok=True)
    runs = [
        (t, a, t.label if len(e.agents) == 1 else f"{t.label}@{a.tag}")
        for t in chosen
        for a in e.agents
    ]
    names = [d.name for d in tasks]
    scores: dict[str, dict[str, Any]] = {}
    usage: dict[str, dict[str, Any]] = {}  # key -> its gateway's accounts
    with (
        progress("evaluate", len(tasks) * e.k * len(runs)) as bar,
        ThreadPoolExecutor(e.parallel_jobs) as pool,
    ):
        futures = [
            pool.submit(run_job, ctx, t, agent, key, tasks, jobs_dir, out, bar)
            for t, agent, key in runs
        ]
        for (t, agent, key), fut in zip(runs, futures, strict=True):
            job_dir, llm = fut.result()
            dest = out / "jobs" / key.replace("@", "__")
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(job_dir, dest, symlinks=True)
            s = score(
                runner.trial_results(job_dir),
                k=e.k,
                tasks=names,
                infra_error_types=e.infra_error_types,
                bootstrap=e.bootstrap,
            )
            scores[key] = {"model": t.model, "agent": agent.tag, **s, **behaviour(job_dir)}
            if llm is not None:
                usage[key] = llm
    k = e.k
    if usage:  # an endpoint's calls, through the gateway: tokens and cost per trial
        track.metrics["llm"] = usage
    keys = ("pass@1", f"pass@{k}", "pass@1_ci95", "tasks", "tasks_scored", "trials",
            "expected_trials", "unfinished", "unfinished_by_type", "model", "agent",
            "parsed_turns", "mean_turns", "commands_per_trial")  # fmt: skip
    result = {
        "benchmark": e.benchmark,
        "dataset": _describe(ctx),
        "agents": [a.tag for a in e.agents],
        "k": k,
        "models": {key: {x: s[x] for x in keys} for key, s in scores.items()},
        "per_task": {key: s["per_task"] for key, s in scores.items()},
        "refused": refused,  # task -> why it was not run
    }
    write_json(ctx.paths.scores, result)
    track.metrics.update(
        {
            "benchmark": e.benchmark,
            "k": k,
            "tasks_refused": len(refused),
            **{
                f"{key}/{x}": s[x]
                for key, s in scores.items()
                for x in ("pass@1", f"pass@{k}", "unfinished", "parsed_turns", "mean_turns")
            },
        }
    )
    track.table = [
        {"model": key, "task": task, "rewards": str(v["rewards"])}
        for key, s in scores.items()
        for task, v in s["per_task"].items()
    ]
    metrics = track.finish()
    too_many = {
        key: s["unfinished"]
        for key, s in scores.items()
        if s["unfinished"] > e.max_unfinished_fraction * s["expected_trials"]
    }
    if too_many:
        worst = max(too_many, key=lambda x: too_many[x])
        s = scores[worst]
        raise StageError(
            f"{worst}: {s['unfinished']} of {s['expected_trials']} trials did not finish "
            f"({s['unfinished_by_type']}), more than eval.max_unfinished_fraction="
            f"{e.max_unfinished_fraction}; run again to resume (finished trials are kept)"
        )
    return metrics


def _describe(ctx: StageContext) -> str:
    e = ctx.cfg.eval
    if e.source == "local":
        return "held-out split of data/envs"
    if e.source == "registry":
        return str(e.dataset)
    if e.source == "path":
        return str(e.path)
    tb = e.terminal_bench
    return f"{tb.name} {tb.version} ({tb.commit or 'unpinned'})"

"""Stage `evaluate`: score a checkpoint (and its untuned base) on a terminal benchmark.

The model is served behind an OpenAI-compatible endpoint on loopback, started and stopped by
the stage (`transformers serve` on CPU, vLLM on GPU), and Harbor runs Terminus-2 against it:
on Harbor's registry datasets (terminal-bench@1.0 / @2.0, online) or on the held-out split of
the environments this pipeline built (offline). Each task gets k attempts; pass@1 is the mean
reward over attempts and tasks, pass@k the unbiased estimator over the k attempts.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from litecoder.config import Config
from litecoder.context import StageContext
from litecoder.harbor import runner
from litecoder.io import StageError, tail, write_json, write_text
from litecoder.records import ModelInfo, Splits
from litecoder.sandbox import docker_client
from litecoder.serve import serve
from litecoder.tracking import StageRun, progress

log = logging.getLogger(__name__)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n attempts with c successes (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def score(results: list[Any], k: int) -> dict[str, Any]:
    per_task: dict[str, list[float]] = {}
    errors = 0
    for r in results:
        per_task.setdefault(r.task_name, []).append(runner.reward(r) or 0.0)
        errors += int(r.exception_info is not None)
    tasks: dict[str, dict[str, Any]] = {
        t: {
            "rewards": rs,
            "pass@1": sum(rs) / len(rs),
            f"pass@{k}": pass_at_k(len(rs), sum(1 for x in rs if x >= 1.0), min(k, len(rs))),
        }
        for t, rs in sorted(per_task.items())
    }
    n = max(1, len(tasks))
    return {
        "pass@1": round(sum(t["pass@1"] for t in tasks.values()) / n, 4),
        f"pass@{k}": round(sum(t[f"pass@{k}"] for t in tasks.values()) / n, 4),
        "tasks": len(tasks),
        "trials": len(results),
        "errors": errors,
        "per_task": tasks,
    }


def harbor_job(
    cfg: Config, api_base: str, served: str, job_name: str, jobs_dir: Path, tasks: list[Path]
) -> dict[str, Any]:
    e = cfg.eval
    kwargs = {**e.agent.kwargs, "api_base": api_base}
    if e.model_info:
        kwargs.setdefault("model_info", e.model_info)
    return runner.job_config(
        job_name=job_name,
        jobs_dir=jobs_dir,
        agents=[{"name": e.agent.name, "model_name": f"openai/{served}", "kwargs": kwargs}],
        tasks=tasks,
        n_attempts=e.k,
        n_concurrent=e.n_concurrent,
        agent_timeout_multiplier=e.agent_timeout_multiplier,
    )


def evaluate_model(
    ctx: StageContext, label: str, model: str, tasks: list[Path], bar: Any
) -> dict[str, Any]:
    cfg = ctx.cfg
    out = ctx.paths.results
    jobs_dir = (out / "jobs").resolve()
    if (jobs_dir / label).exists():
        shutil.rmtree(jobs_dir / label)
    start = time.monotonic()
    staged = runner.stage(
        tasks,
        ctx.root / ".litecoder" / "evaluate" / f"{cfg.eval.benchmark}-{label}",
        run=runner.run_label(jobs_dir / label),
        sec=runner.Security.from_config(cfg),
        build_timeout_s=cfg.envprep.task.build_timeout_sec,
    )
    with serve(model, cfg, ctx.root, out / f"serve-{label}.log") as (base, served):
        conf = harbor_job(cfg, base, served, label, jobs_dir, staged)
        conf_path = out / f"job-{label}.json"
        write_text(conf_path, json.dumps(conf, indent=2))
        log_path = out / f"harbor-{label}.log"
        log_path.unlink(missing_ok=True)
        runner.run_harbor(
            [runner.harbor_bin(), "run", "-c", str(conf_path), "-y"],
            env=runner.harbor_env(OPENAI_API_KEY="EMPTY"),
            job_dir=jobs_dir / label,
            log_path=log_path,
            timeout_s=cfg.eval.harbor_timeout_s,
            bar=bar,
        )
    results = runner.trial_results(jobs_dir / label)
    if not results:
        log_tail = tail(log_path.read_text(errors="replace"))
        raise StageError(f"harbor produced no trial results for {label}: {log_tail}")
    return {
        "model": model,
        **score(results, cfg.eval.k),
        "seconds": round(time.monotonic() - start, 1),
    }


def download(cfg: Config, root: Path) -> list[Path]:
    """A registry dataset's task dirs, fetched once with `harbor download` (then staged and run
    like local tasks, under litecoder's limits)."""
    assert cfg.eval.dataset is not None
    dest = root / ".litecoder" / "datasets" / cfg.eval.dataset.replace("/", "__")
    if not any(dest.glob("**/task.toml")):
        log_path = dest.parent / f"{dest.name}.log"
        dest.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            [runner.harbor_bin(), "download", cfg.eval.dataset, "-o", str(dest), "--export"],
            capture_output=True,
            text=True,
            env=runner.harbor_env(),
            timeout=cfg.eval.harbor_timeout_s,
        )
        log_path.write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            raise StageError(
                f"could not download {cfg.eval.dataset}: {tail(r.stdout + r.stderr, 3)}"
            )
    tasks = sorted(p.parent for p in dest.glob("**/task.toml"))
    if not tasks:
        raise StageError(f"{cfg.eval.dataset} has no tasks (looked in {dest})")
    return tasks


def run(ctx: StageContext) -> dict[str, Any]:
    """results/<benchmark>.json: pass@1 and pass@k of the tuned model and its base."""
    cfg = ctx.cfg
    track = StageRun("evaluate", cfg, ctx.paths.workdir)
    docker_client()
    if cfg.eval.source == "local":
        splits = ctx.read_one("envs", Splits, "splits.json")
        tasks = [(ctx.paths.envs / t).resolve() for t in splits.heldout]
        if not tasks:
            raise StageError("the held-out split is empty: raise envprep.heldout_fraction")
    else:
        tasks = download(cfg, ctx.root)
    info = ctx.read_one("models", ModelInfo, "model.json")
    models = {"tuned": info.checkpoint}
    if cfg.eval.baseline:
        models["baseline"] = info.base_model
    expected = len(tasks) * cfg.eval.k * len(models) if tasks else 0
    scores = {}
    with progress("evaluate", expected) as bar:
        for label, model in models.items():
            path = ctx.paths.workdir / model
            scores[label] = evaluate_model(
                ctx, label, str(path if path.exists() else model), tasks, bar
            )
    k = cfg.eval.k
    result = {
        "benchmark": cfg.eval.benchmark,
        "dataset": cfg.eval.dataset or "held-out split of data/envs",
        "agent": cfg.eval.agent.name,
        "k": k,
        "models": {
            label: {key: s[key] for key in ("pass@1", f"pass@{k}", "tasks", "trials", "errors")}
            for label, s in scores.items()
        },
        "per_task": {label: s["per_task"] for label, s in scores.items()},
    }
    write_json(ctx.paths.scores, result)
    track.metrics.update(
        {
            "benchmark": cfg.eval.benchmark,
            "k": k,
            **{
                f"{label}/{key}": s[key]
                for label, s in scores.items()
                for key in ("pass@1", f"pass@{k}", "seconds")
            },
        }
    )
    track.table = [
        {"model": label, "task": t, "rewards": str(v["rewards"])}
        for label, s in scores.items()
        for t, v in s["per_task"].items()
    ]
    return track.finish()

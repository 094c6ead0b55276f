"""Stage `calibrate`: how hard each environment is, and the environments as a Harbor dataset.

k attempts per environment (`calibrate.k`) of a solver model (`calibrate.role`, optionally
another `calibrate.model` at that endpoint: e.g. the student an RL run would train) through
Harbor and the gateway, like rollouts; the pass rate of each environment is the share of its
finished attempts that got reward 1 (trials that failed outside the agent are left out, and
counted). An environment is RL-useful when `band[0] < pass rate < band[1]`: solved by every
attempt or by none, it teaches a policy-gradient learner nothing.

data/calibration/pass_rates.json holds every environment's rate; data/export/ is a Harbor
dataset directory: the environments (all, or those in the band: `calibrate.export`) as they
are, each task.toml's `[metadata.litecoder.calibration]` filled in, and `manifest.json`
(pass rates, verifier strength, provenance) for RL trainers that read Harbor tasks.
`harbor run -p data/export/<task>` runs one as it is.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from litecoder.config import Config, RolloutAgent
from litecoder.context import StageContext
from litecoder.gateway import Gateway
from litecoder.harbor import agents, runner
from litecoder.harbor.taskdir import litecoder_meta
from litecoder.io import write_json
from litecoder.records import Splits
from litecoder.sandbox import container_host, docker_client
from litecoder.stages.rollout import agent_config, teacher_env
from litecoder.tracking import StageRun, progress

BINS = [(0.0, 0.0, "0"), (0.0, 0.25, "(0, .25]"), (0.25, 0.5, "(.25, .5]"),
        (0.5, 0.75, "(.5, .75]"), (0.75, 1.0, "(.75, 1)"), (1.0, 1.0, "1")]  # fmt: skip
MANIFEST = "manifest.json"


def bin_of(p: float) -> str:
    if p <= 0.0:
        return "0"
    if p >= 1.0:
        return "1"
    return next(label for lo, hi, label in BINS[1:-1] if lo < p <= hi)


def pass_rates(results: list[Any], tasks: list[str], infra: set[str]) -> dict[str, Any]:
    """Per task: attempts that finished (infrastructure failures left out), solved, rate."""
    out: dict[str, Any] = {t: {"attempts": 0, "solved": 0, "infra_errors": 0} for t in tasks}
    for r in results:
        row = out.setdefault(r.task_name, {"attempts": 0, "solved": 0, "infra_errors": 0})
        if runner.exception_type(r) in infra:
            row["infra_errors"] += 1
            continue
        row["attempts"] += 1
        row["solved"] += int(runner.reward(r) == 1.0)
    for row in out.values():
        n = row["attempts"]
        row["pass_rate"] = round(row["solved"] / n, 4) if n else None
    return out


def export(cfg: Config, envs: Path, rates: dict[str, Any], dest: Path, solver: str) -> list[str]:
    """data/export/: the chosen environments with their calibration, and the manifest."""
    from harbor.models.task.config import TaskConfig

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    lo, hi = cfg.calibrate.band
    tasks = []
    for name, row in sorted(rates.items()):
        p = row["pass_rate"]
        in_band = p is not None and lo < p < hi
        row["in_band"] = in_band
        if cfg.calibrate.export == "band" and not in_band:
            continue
        shutil.copytree(envs / name, dest / name, symlinks=True)
        toml_path = dest / name / "task.toml"
        task = TaskConfig.model_validate(tomllib.loads(toml_path.read_text()))
        meta = dict(task.metadata or {})
        lc = dict(meta.get("litecoder") or {})
        lc["calibration"] = {"pass_rate": p, "attempts": row["attempts"], "solver": solver,
                             "in_band": in_band, "band": [lo, hi]}  # fmt: skip
        meta["litecoder"] = lc
        task.metadata = meta
        toml_path.write_text(task.model_dump_toml())
        tasks.append(
            {
                "name": name,
                "path": name,
                "pass_rate": p,
                "attempts": row["attempts"],
                "in_band": in_band,
                "verifier": {
                    k.removeprefix("verifier_"): v
                    for k, v in (lc.get("checks") or {}).items()
                    if k.startswith("verifier_")
                },
                "provenance": {
                    "experiment": cfg.experiment.name,
                    "domain": lc.get("domain"),
                    "subtopic": lc.get("subtopic"),
                    "source_task": lc.get("task_id"),
                    "environment_agent": cfg.teacher("agent").model,
                    "envprep_mode": lc.get("mode"),
                },
            }
        )
    write_json(
        dest / MANIFEST,
        {
            "name": f"litecoder-{cfg.experiment.name}",
            "format": "harbor task directories (one per task)",
            "solver": solver,
            "k": cfg.calibrate.k,
            "band": [lo, hi],
            "litecoder_commit": _commit(),
            "tasks": tasks,
        },
    )
    return [t["name"] for t in tasks]


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run(ctx: StageContext) -> dict[str, Any]:
    """data/calibration/pass_rates.json and data/export/ from data/envs and a solver."""
    cfg = ctx.cfg
    c = cfg.calibrate
    track = StageRun("calibrate", cfg, ctx.paths.workdir)
    splits = ctx.read_one("envs", Splits, "splits")
    ids = splits.train + (splits.heldout if c.split == "all" else [])
    teacher = cfg.teacher(c.role)
    solver = c.model or teacher.model
    out = ctx.paths.calibration
    out.mkdir(parents=True, exist_ok=True)
    rates: dict[str, Any] = {}
    if c.enabled and ids:
        local = cfg.environment.local
        if local:
            docker_client()
        runner.preflight_environment(cfg)
        dirs = [(ctx.paths.envs / t).resolve() for t in ids]
        work = ctx.root / ".litecoder" / "calibrate"
        agent = RolloutAgent(name=c.agent.name, label="calibrate", share=1, model=c.model,
                             kwargs=dict(c.agent.kwargs))  # fmt: skip
        in_container = agents.check(agent.name, local=local).in_container
        gateway = Gateway(
            lambda: ctx.client(c.role, cached=False, share_identical=False),
            models=[c.model] if c.model else [],
            container_host=container_host() if in_container else None,
        )
        name = f"calibrate-{zlib.crc32(repr((solver, c.k, ids)).encode()):08x}"
        with gateway, progress("calibrate", len(dirs) * c.k) as bar:
            job_dir, _, _ = runner.run_job(
                name=name,
                jobs_dir=(work / "jobs").resolve(),
                work=work,
                tasks=dirs,
                agents=[
                    agent_config(
                        cfg,
                        agent,
                        gateway.base_url,
                        stage="calibrate",
                        role=c.role,
                        container_base=gateway.container_url,
                    )
                ],
                n_attempts=c.k,
                n_concurrent=cfg.environment.n_concurrent or c.n_concurrent,
                env=teacher_env(cfg, gateway.issue_token(name, agent.label)),
                policy=runner.TrialPolicy.of(cfg, agent_network=in_container),
                environment=runner.environment_config(cfg),
                build_timeout_s=cfg.envprep.task.build_timeout_sec,
                harbor_timeout_s=c.harbor_timeout_s,
                rerun_types=cfg.rollout.endpoint_error_types,
                agent_timeout_multiplier=c.agent_timeout_multiplier,
                bar=bar,
                local=local,
            )
        infra = set(cfg.eval.infra_error_types) | set(cfg.rollout.endpoint_error_types)
        rates = pass_rates(runner.trial_results(job_dir), ids, infra)
        track.metrics["llm"] = gateway.summary()
    exported = export(cfg, ctx.paths.envs, rates, ctx.paths.export, solver)
    write_json(
        ctx.paths.file("calibration", "pass_rates"), {"solver": solver, "k": c.k, "tasks": rates}
    )
    known = [r["pass_rate"] for r in rates.values() if r["pass_rate"] is not None]
    bins = Counter(bin_of(p) for p in known)
    track.metrics.update(
        {
            "enabled": c.enabled,
            "solver": solver,
            "k": c.k,
            "environments": len(rates),
            "calibrated": len(known),
            "in_band": sum(bool(r.get("in_band")) for r in rates.values()),
            "exported": len(exported),
            "mean_pass_rate": round(sum(known) / len(known), 4) if known else None,
            "pass_rate_bins": {b[2]: bins[b[2]] for b in BINS},
            "infra_errors": sum(r["infra_errors"] for r in rates.values()),
            "per_domain": _per_domain(ctx.paths.envs, rates),
        }
    )  # fmt: skip
    track.table = [{"task": t, **{k: str(v) for k, v in r.items()}} for t, r in rates.items()]
    return track.finish()


def _per_domain(envs: Path, rates: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for name, r in rates.items():
        dom = str(litecoder_meta(envs / name).get("domain") or "?")
        d = out.setdefault(dom, {"environments": 0, "in_band": 0, "solved": 0, "attempts": 0})
        d["environments"] += 1
        d["in_band"] += int(bool(r.get("in_band")))
        d["solved"] += r["solved"]
        d["attempts"] += r["attempts"]
    return out

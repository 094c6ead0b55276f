"""Running Harbor: one JobConfig builder, task staging, the run itself, and its results.

Every Harbor job litecoder runs (rollouts, evaluation, envprep's oracle check) goes through
`stage` and `run_harbor`:

- `stage` refuses a task whose compose file, task.toml, Dockerfiles or links could reach the
  host (every reason, the task named), builds its images with litecoder's confined builder
  and writes a copy whose `environment/` holds only litecoder's `TrialSpec`: the services,
  the images and the limits every container gets. On the local engine Harbor then runs each
  trial through litecoder's own environment (`litecoder.harbor.environment`, by import path),
  so every file, log, reward and process crosses the trial's boundary through litecoder's
  sandbox layer; Harbor's process gets a minimal environment, never this process's.
- `run_harbor` starts Harbor, shows progress as trial results appear, sanitizes what is in
  each trial dir before anyone reads it (a second look), watches the trial containers' cgroup
  counters (process limit, OOM kills) and records both, with what the environment refused,
  in `<trial>/litecoder.json`; at the end (or on timeout, error or interrupt) it stops Harbor
  and removes whatever trial containers and networks are left, found by their labels.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litecoder.config import Config, TrialEnvironment
from litecoder.config import Security as SecurityConfig
from litecoder.harbor import compose
from litecoder.harbor.taskdir import content_hash, reach, set_network_mode, set_run_environment
from litecoder.io import StageError, write_json
from litecoder.net import reachable
from litecoder.procs import die_with_parent, stop_process
from litecoder.sandbox import (
    LABEL,
    Refusal,
    build_image,
    docker_client,
    image_exists,
    image_labels,
    labels,
    pull_image,
    sanitize_tree,
)
from litecoder.sandbox.cgroups import reader_for
from litecoder.sandbox.engine import (
    PROJECT_LABEL,
    QUOTA_HELP,
    SandboxError,
    disk_quota_problem,
    project,
    remove_containers,
    storage_size,
)
from litecoder.sandbox.trial import (
    PROJECT_ENV,
    RUN_ENV,
    Healthcheck,
    Service,
    TrialSpec,
    trial_key,
)
from litecoder.sandbox.untrusted import make_private

if TYPE_CHECKING:  # Harbor ships no type information: these read as Any to mypy
    from harbor.models.trial.result import TrialResult

log = logging.getLogger(__name__)
REPORT = "litecoder.json"  # per trial: what was sanitized and which limits were hit
ENV_REPORT = "litecoder-env.json"  # per trial: written by litecoder's environment as it stops
IMPORT_PATH = "litecoder.harbor.environment:LitecoderEnvironment"
VERIFIER_IMPORT_PATH = "litecoder.harbor.environment:LitecoderVerifier"

# What Harbor's process may see of this one's environment: where things are, Docker's own
# settings, proxies and certificates. Keys, tokens and everything else stay here; a job's
# own needs (the gateway token, a provider's credentials) are passed explicitly.
HARBOR_PASSES = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM",
    "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_CONTEXT",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip


def harbor_env(*, pass_env: Sequence[str] = (), **extra: str) -> dict[str, str]:
    """The whole environment of a Harbor subprocess: a few of this process's variables
    (HARBOR_PASSES, plus `pass_env`: e.g. a trial provider's credentials), offline-safe
    LiteLLM, no telemetry, and `extra`."""
    env = {k: os.environ[k] for k in (*HARBOR_PASSES, *pass_env) if k in os.environ}
    return {**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HARBOR_TELEMETRY": "0", **extra}


def harbor_bin() -> str:
    """The `harbor` CLI of this environment (beside the interpreter), else from PATH."""
    local = Path(sys.executable).parent / "harbor"
    return str(local) if local.exists() else (shutil.which("harbor") or "harbor")


# --- the job ----------------------------------------------------------------------------------


def job_config(
    *,
    job_name: str,
    jobs_dir: Path,
    agents: list[dict[str, Any]],
    tasks: Sequence[Path] = (),
    n_attempts: int = 1,
    n_concurrent: int = 2,
    timeout_multiplier: float = 1.0,
    agent_timeout_multiplier: float | None = None,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Harbor JobConfig (validated by Harbor's own model) over staged task dirs."""
    from harbor.models.job.config import JobConfig

    env = environment or environment_config()
    # In litecoder's own environment, the verifier starts after the trial is cleaned.
    ours = env.get("import_path") == IMPORT_PATH
    job = JobConfig.model_validate(
        {
            "job_name": job_name,
            "jobs_dir": str(jobs_dir),
            "n_attempts": n_attempts,
            "n_concurrent_trials": n_concurrent,
            "timeout_multiplier": timeout_multiplier,
            "agent_timeout_multiplier": agent_timeout_multiplier,
            "quiet": True,
            "agents": agents,
            "tasks": [{"path": str(d)} for d in tasks],
            "environment": env,
            "verifier": {"import_path": VERIFIER_IMPORT_PATH} if ours else {},
        }
    )
    dumped: dict[str, Any] = job.model_dump(mode="json")
    return dumped


# --- staging ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialPolicy:
    """How one job's trials are staged: the config's `security` section (what every container
    may do), where trials run, and what the calling stage allows."""

    security: SecurityConfig = field(default_factory=SecurityConfig)
    environment: TrialEnvironment = field(default_factory=TrialEnvironment)
    # The task's declared network is kept (else every trial is cut off).
    network: bool = False
    # The agent runs inside the container and calls the gateway on the host's bridge address:
    # its trials get a bridged network whatever the task declares.
    agent_network: bool = False

    @classmethod
    def of(cls, cfg: Config, *, network: bool = False, agent_network: bool = False) -> TrialPolicy:
        return cls(cfg.security, cfg.environment, network=network, agent_network=agent_network)

    @property
    def disk_quota(self) -> bool:
        """A hard disk quota is litecoder's to set only on its own local engine."""
        return self.security.disk_quota and self.environment.local


def environment_config(cfg: Config | None = None) -> dict[str, Any]:
    """Harbor's environment section of a job. On the local engine: litecoder's own
    environment (by import path); elsewhere the provider's, which builds from the
    Dockerfile."""
    env = cfg.environment if cfg is not None else None
    if env is None or env.local:
        return {"import_path": IMPORT_PATH, "delete": True}
    return {"type": env.type, "kwargs": dict(env.kwargs), "delete": True}


def preflight_environment(cfg: Config) -> None:
    """Before any trial: the provider reachable and its credentials there (Harbor's own check,
    which reads them from the environment), else one line saying what is missing."""
    from harbor.environments.factory import EnvironmentFactory
    from harbor.models.environment_type import EnvironmentType

    env = cfg.environment
    if env.local:
        return
    if env.api_host and (why := reachable(env.api_host)):
        raise StageError(f"environment {env.type} cannot be reached from here: {why}")
    try:
        EnvironmentFactory.run_preflight(type=EnvironmentType(env.type), kwargs=dict(env.kwargs))
    except SystemExit as e:  # Harbor's preflights exit with the message
        raise StageError(f"environment {env.type}: {e.code}") from None
    except (ValueError, ImportError) as e:
        raise StageError(f"environment {env.type}: {e}") from None


class TaskRejected(StageError):
    def __init__(self, task: str, reasons: list[str]):
        super().__init__(f"{task}: " + "; ".join(reasons))
        self.task, self.reasons = task, reasons


def env_hash(env_dir: Path) -> str:
    """What an environment's image is built from: the dir without its compose file."""
    return content_hash(env_dir, exclude=compose.COMPOSE_NAMES)


def image_tag(name: str, env_hash: str) -> str:
    safe = re.sub(r"[^a-z0-9_.-]", "-", name.lower()).strip("-.") or "task"
    return f"litecoder-trial/{safe}:{env_hash[:16]}"


def refusals(task_dir: Path) -> list[str]:
    """Why litecoder will not run a task dir (empty: it will); see `taskdir.reach`."""
    problems = [p for _, p in reach(task_dir)]
    if not (task_dir / "environment" / "Dockerfile").is_file():
        problems.append("environment/Dockerfile is missing")
    return problems


def stage(
    task_dirs: Sequence[Path],
    dest: Path,
    *,
    run: str,
    policy: TrialPolicy,
    build_timeout_s: float = 1800,
    client: Any = None,
    concurrency: int = 4,
) -> list[Path]:
    """Staged copies of `task_dirs` under `dest` (see the module docstring). A task that
    could reach the host raises TaskRejected with every reason."""
    from harbor.models.task.config import TaskConfig

    sec = policy.security
    if policy.environment.local:
        client = client or docker_client()
    make_private(dest)
    for d in task_dirs:
        reasons = refusals(d)
        if reasons:
            raise TaskRejected(d.name, reasons)

    def copy(src: Path) -> Path:
        out = dest / src.name
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(src, out, symlinks=True)
        return out

    def remote(src: Path) -> Path:
        """A copy for a remote environment: Harbor builds it there; the network is cut by
        Harbor's own policy (where the backend can)."""
        out = copy(src)
        for name in compose.COMPOSE_NAMES:
            (out / "environment" / name).unlink(missing_ok=True)
        task = TaskConfig.model_validate(tomllib.loads((out / "task.toml").read_text()))
        declared = str(task.environment.network_mode.value)
        set_network_mode(out / "task.toml", declared if policy.network else "no-network")
        return out

    if not policy.environment.local:
        return [remote(d) for d in task_dirs]

    def image_of(src: Path, name: str, d: compose.Declared) -> str:
        """A sidecar's image: built from its context by litecoder's builder, or a reference
        that is (or can be pulled) on this engine."""
        env = src / "environment"
        if d.build_context is not None:
            ctx = env / d.build_context
            tag = image_tag(f"{src.name}-{name}", content_hash(ctx))
            if not image_exists(client, tag):
                build_image(
                    client, ctx, tag, image_labels(run, src.name, "trial-image"),
                    build_timeout_s, sec.build, dockerfile=d.dockerfile, buildargs=d.build_args,
                )  # fmt: skip
            return tag
        assert d.image is not None
        if not image_exists(client, d.image):
            try:
                pull_image(client, d.image)
            except SandboxError as e:
                raise TaskRejected(src.name, [f"services.{name}.image: {e}"]) from None
        return d.image

    def one(src: Path) -> Path:
        tag = image_tag(src.name, env_hash(src / "environment"))
        if not image_exists(client, tag):
            build_image(
                client,
                src / "environment",
                tag,
                image_labels(run, src.name, "trial-image"),
                build_timeout_s,
                sec.build,
            )
        if policy.disk_quota:
            problem = disk_quota_problem(client, tag)
            if problem:
                raise StageError(f"{problem}; {QUOTA_HELP}")
        parsed = compose.parse(src / "environment")
        task = TaskConfig.model_validate(tomllib.loads((src / "task.toml").read_text()))
        declared = str(task.environment.network_mode.value)
        services: dict[str, Service] = {}
        for name, d in parsed.services.items():
            main = name == compose.MAIN
            image = tag if main else image_of(src, name, d)
            disk_mb = (task.environment.storage_mb or 10240) if main else sec.sidecar_disk_mb
            services[name] = Service(
                image=image,
                command=d.command,
                entrypoint=d.entrypoint,
                environment=d.environment,
                working_dir=d.working_dir,
                user=d.user,
                healthcheck=Healthcheck(**d.healthcheck) if d.healthcheck else None,
                depends_on=d.depends_on,
                memory_mb=(task.environment.memory_mb or sec.trial_memory_mb)
                if main
                else sec.sidecar_memory_mb,
                cpus=float(task.environment.cpus or 1),
                storage_size=storage_size(client, image, disk_mb) if policy.disk_quota else None,
            )
        spec = TrialSpec(
            services=services,
            capabilities=list(sec.capabilities),
            pids=sec.trial_pids,
            # A task may ask for less; an agent in the container needs the gateway.
            network=(policy.network and declared != "no-network") or policy.agent_network,
            # The run and project labels are the environment's (RUN_ENV), not the content's.
            labels={
                k: v
                for k, v in labels(run, src.name, "trial").items()
                if k not in (f"{LABEL}.run", PROJECT_LABEL)
            },
            log_max_mb=sec.log_max_mb,
            output_bytes=sec.trial_output_kb * 2**10,
            copy_max_file_bytes=sec.copy_out.max_file_mb * 2**20,
            copy_max_total_bytes=sec.copy_out.max_total_mb * 2**20,
            copy_max_files=sec.copy_out.max_files,
            reward_max_bytes=sec.copy_out.reward_max_kb * 2**10,
            clean_before_verifier=sec.clean_before_verifier,
            start_timeout_s=build_timeout_s,
        )
        out = copy(src)
        # Nothing of the task's environment/ goes to Harbor: the spec is all it runs.
        shutil.rmtree(out / "environment")
        (out / "environment").mkdir()
        spec.write(out / "environment")
        set_run_environment(out / "task.toml", tag)
        return out

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        return list(pool.map(one, task_dirs))


# --- results ----------------------------------------------------------------------------------


def _read(path: Path) -> TrialResult | None:
    """A finished trial's result (Harbor's TrialResult), or None while it runs."""
    from harbor.models.trial.result import TrialResult

    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    # Harbor writes result.json when a trial starts; it is final once finished_at is set.
    if not raw.get("finished_at"):
        return None
    return TrialResult.model_validate(raw)


JOB_INFO = "litecoder-job.json"  # in a rollout job dir: the agent label, each task's metadata


def trial_results(job_dir: Path) -> list[TrialResult]:
    """The finished trials of a Harbor job directory, as Harbor's own TrialResult models."""
    return [r for r in map(_read, sorted(job_dir.glob("*/result.json"))) if r is not None]


def keep_results(job_dir: Path, rerun_types: Sequence[str]) -> int:
    """Before resuming a job: drop the trials that ended in one of `rerun_types` (failures
    outside the agent, which are not results) so that they run again; the number of finished
    trials kept."""
    if not job_dir.exists():
        return 0
    _drop_torn_job_result(job_dir)
    for r in trial_results(job_dir):
        if exception_type(r) in rerun_types:
            shutil.rmtree(job_dir / r.trial_name, ignore_errors=True)
    return len(trial_results(job_dir))


def _drop_torn_job_result(job_dir: Path) -> None:
    """Harbor rewrites a job's result.json in place as trials finish: a job killed during that
    write leaves it empty or cut, and `harbor job resume` then stops on it. It is a summary of
    the trial dirs, which resume reads anyway: a torn one is removed."""
    from harbor.models.job.result import JobResult
    from pydantic import ValidationError

    path = job_dir / "result.json"
    if not path.exists():
        return
    try:
        JobResult.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError):
        log.warning("%s: a torn job result.json (killed while Harbor wrote it) is removed", job_dir)
        path.unlink(missing_ok=True)


def reward(result: TrialResult) -> float | None:
    """The one place the reward is read: the verifier's `reward` (None without a verdict)."""
    vr = result.verifier_result
    value = (vr.rewards or {}).get("reward") if vr is not None else None
    return float(value) if value is not None else None


def exception_type(result: TrialResult) -> str | None:
    return result.exception_info.exception_type if result.exception_info else None


def trial_report(trial_dir: Path) -> dict[str, Any]:
    """What `run_harbor` recorded for a trial (sanitized paths, limits hit)."""
    p = trial_dir / REPORT
    with contextlib.suppress(OSError, json.JSONDecodeError):
        report: dict[str, Any] = json.loads(p.read_text())
        return report
    return {}


# --- running ----------------------------------------------------------------------------------


@dataclass
class Watch:
    """Cgroup counters of a job's trial containers, read while they run (where their engine
    runs them: litecoder.sandbox.cgroups): how often the process limit stopped a fork, and OOM
    kills. (The disk quota is enforced by the
    kernel; the engine's size report of a container is not reliable enough to record.)"""

    run: str
    client: Any
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # compose project -> counters

    def sample(self) -> None:
        if self.client is None:  # trials on a remote environment: nothing to read here
            return
        try:
            rows = self.client.api.containers(
                all=True, filters={"label": f"{LABEL}.run={self.run}"}
            )
        except Exception:
            return
        for r in rows:
            project = (r.get("Labels") or {}).get("litecoder.trial", r["Id"][:12])
            d = self.seen.setdefault(project, {"pids_limit_hits": 0, "oom_kills": 0})
            cid = r["Id"]
            counters = reader_for(self.client)  # this host's cgroup tree, else the engine's
            hits = counters.pids_limit_hits(cid)
            ooms = counters.oom_kills(cid)
            d["pids_limit_hits"] = max(d["pids_limit_hits"], hits or 0)
            d["oom_kills"] = max(d["oom_kills"], ooms or 0)

    def for_trial(self, trial: str) -> dict[str, int]:
        prefix = trial_key(trial)
        out: dict[str, int] = {}
        for k, v in self.seen.items():
            if k.startswith(prefix):
                for name, x in v.items():
                    out[name] = max(out.get(name, 0), x)
        return out


def _record(trial_dir: Path, sanitized: list[Refusal], limits: dict[str, Any]) -> None:
    """litecoder.json: what litecoder's environment refused to copy out and did (its own
    report, merged once), what the second look sanitized, and the limits hit."""
    old = trial_report(trial_dir)
    env: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        env = json.loads((trial_dir / ENV_REPORT).read_text())
    merged = {
        "sanitized": old.get("sanitized", [])
        + [r.to_dict() for r in sanitized]
        + [r for r in env.get("refused", []) if r not in old.get("sanitized", [])],
        "limits": {**old.get("limits", {}), **limits},
        "environment": {**old.get("environment", {}),
                        **{k: v for k, v in env.items() if k != "refused"}},
    }  # fmt: skip
    write_json(trial_dir / REPORT, merged)


def reap(run: str) -> int:
    """Remove the trial containers (and networks) of a job that are still there."""
    n = remove_containers(docker_client(), run)
    if n:
        log.warning("removed %d trial container(s) left by job %s", n, run)
    return n


def run_label(job_dir: Path) -> str:
    """The `litecoder.run` label of a job's containers: unique per job directory."""
    digest = hashlib.sha256(str(job_dir.resolve()).encode()).hexdigest()[:8]
    return f"{job_dir.name[:40]}-{digest}"


def run_harbor(
    cmd: list[str],
    *,
    env: dict[str, str],
    job_dir: Path,
    log_path: Path,
    timeout_s: float,
    bar: Any = None,
    label: str | None = None,
    local: bool = True,
) -> tuple[float, int]:
    """Run a Harbor command to the end (see the module docstring). Returns (seconds, exit).
    `local`: the trials run on this Docker engine (reaped and watched from here)."""
    start = time.monotonic()
    label = label or run_label(job_dir)
    if local:
        reap(label)
    make_private(job_dir.parent)
    watch = Watch(label, docker_client() if local else None)
    finished = {p.parent for p in job_dir.glob("*/result.json") if _read(p)}
    done_before = len(finished)
    seen = done_before

    def settle(trial_dir: Path) -> None:
        _record(trial_dir, sanitize_tree(trial_dir), watch.for_trial(trial_dir.name))

    def poll() -> None:
        nonlocal seen
        watch.sample()
        new = {
            p.parent for p in job_dir.glob("*/result.json") if p.parent not in finished and _read(p)
        }
        for d in sorted(new):
            settle(d)
        finished.update(new)
        if bar is not None:
            bar.advance(len(finished) - seen)
        seen = len(finished)

    stop = threading.Event()
    with log_path.open("a") as logf:
        env = {**env, RUN_ENV: label, PROJECT_ENV: project()}  # the trials' labels
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
        )
        try:
            while proc.poll() is None:
                stop.wait(1)
                poll()
                if time.monotonic() - start > timeout_s:
                    raise StageError(f"harbor did not finish in {timeout_s:g}s")
        finally:
            stop_process(proc)
            if local:
                reap(label)
            # Whatever Harbor copied out (finished or not), sanitized before anyone reads it.
            for d in sorted(p for p in job_dir.glob("*") if p.is_dir()):
                if d not in finished:
                    settle(d)
    poll()
    return time.monotonic() - start, proc.returncode


def run_job(
    *,
    name: str,
    jobs_dir: Path,
    work: Path,
    tasks: Sequence[Path],
    agents: list[dict[str, Any]],
    n_attempts: int,
    n_concurrent: int,
    env: dict[str, str],
    policy: TrialPolicy,
    environment: dict[str, Any],
    build_timeout_s: float,
    harbor_timeout_s: float,
    rerun_types: Sequence[str] = (),
    timeout_multiplier: float = 1.0,
    agent_timeout_multiplier: float | None = None,
    bar: Any = None,
    local: bool = True,
    partial_ok: bool = False,
    client: Any = None,
) -> tuple[Path, float, bool]:
    """A Harbor job over `tasks` run to its end: resumed when its dir exists (the trials that
    ended in `rerun_types` run again, finished ones are kept), else started; the tasks staged
    first (in `work`, with the job's config and log). Rollout, calibrate, evaluate and
    envprep's oracle check all run their jobs here. Returns the job dir, Harbor's seconds and
    whether it was resumed. Harbor failing before every trial has a result is a StageError,
    unless `partial_ok` (the caller counts what is missing)."""
    job_dir = jobs_dir / name
    expected = len(tasks) * n_attempts
    if finished(job_dir, rerun_types, expected):
        if bar is not None:
            bar.advance(expected)
        return job_dir, 0.0, False
    done = len(trial_results(job_dir))
    with _STAGING:  # jobs side by side share task images: one builds, the others reuse
        staged = stage(
            tasks, work / "tasks" / name, run=run_label(job_dir), policy=policy,
            build_timeout_s=build_timeout_s, client=client,
        )  # fmt: skip
    resumed = (job_dir / "config.json").exists()
    if resumed:
        log.info("resuming %s (%d/%d trials done)", name, done, expected)
        moved_from = rebind(job_dir, jobs_dir, staged, agents)
        if local and moved_from is not None and not moved_from.exists():
            reap(run_label(moved_from))  # what a killed run left before the project moved
        if bar is not None:
            bar.advance(done)
        cmd = [harbor_bin(), "job", "resume", "-p", str(job_dir)]
    else:
        conf = job_config(
            job_name=name, jobs_dir=jobs_dir, agents=agents, tasks=staged,
            n_attempts=n_attempts, n_concurrent=n_concurrent,
            timeout_multiplier=timeout_multiplier,
            agent_timeout_multiplier=agent_timeout_multiplier, environment=environment,
        )  # fmt: skip
        conf_path = work / f"{name}.json"
        conf_path.write_text(json.dumps(conf, indent=2))
        cmd = [harbor_bin(), "run", "-c", str(conf_path), "-y"]
    log_path = work / f"{name}.log"
    secs, rc = run_harbor(
        cmd, env=env, job_dir=job_dir, log_path=log_path, timeout_s=harbor_timeout_s, bar=bar,
        local=local,
    )  # fmt: skip
    if rc != 0 and len(trial_results(job_dir)) < expected:
        from litecoder.io import tail

        why = f"harbor exited {rc}: {tail(log_path.read_text(errors='replace'))}"
        if not partial_ok:
            raise StageError(why)
        log.warning("%s: %s", name, why)
    return job_dir, secs, resumed


# Where an agent reaches its model (the gateway's address this run), in its kwargs.
ENDPOINT_KWARGS = ("api_base", "base_url")


def rebind(
    job_dir: Path, jobs_dir: Path, staged: Sequence[Path], agents: list[dict[str, Any]]
) -> Path | None:
    """Point a resumed job's configs at where its project and its model are now. Harbor keeps
    absolute paths (jobs dir, staged task dirs) and each agent's endpoint in the job's
    config.json and lock.json and in each trial's config.json: in a project that was moved or
    copied, or whose gateway got another port, `harbor job resume` would otherwise run the old
    location's tasks, write beside the old project, call a dead endpoint, or match no finished
    trial. Tasks are matched by their staged dir's name, agents by name and model, neither of
    which depends on where things are. Returns the job dir the configs named before, when it
    was another."""
    where = {p.name: str(p) for p in staged}
    endpoints = {
        (a.get("name"), a.get("model_name")): {
            k: v for k, v in (a.get("kwargs") or {}).items() if k in ENDPOINT_KWARGS
        }
        for a in agents
    }
    before: list[Path] = []

    def agent(entry: dict[str, Any]) -> None:
        now = endpoints.get((entry.get("name"), entry.get("model_name")))
        if now and isinstance(entry.get("kwargs"), dict):
            entry["kwargs"].update(now)

    def task(entry: dict[str, Any]) -> None:
        if (old := entry.get("path")) and (new := where.get(Path(old).name)):
            entry["path"] = new

    def rewrite(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
        try:
            conf = json.loads(path.read_text())
        except (OSError, ValueError):
            conf = None
        if not isinstance(conf, dict):
            return  # Harbor drops (trial) or refuses (job) an unreadable config itself
        was = json.dumps(conf)
        edit(conf)
        if json.dumps(conf) != was:  # a job resumed where it was made is left as it is
            path.write_text(json.dumps(conf, indent=4))

    def job(conf: dict[str, Any]) -> None:
        if isinstance(old := conf.get("jobs_dir"), str):
            before.append(Path(old) / job_dir.name)
        conf["jobs_dir"] = str(jobs_dir)
        for entry in conf.get("tasks") or []:
            task(entry)
        for entry in conf.get("agents") or []:
            agent(entry)

    def trial(conf: dict[str, Any]) -> None:
        conf["trials_dir"] = str(job_dir)
        task(conf.get("task") or {})
        agent(conf.get("agent") or {})

    def trial_lock(conf: dict[str, Any]) -> None:
        task(conf.get("task") or {})
        agent(conf.get("agent") or {})

    def lock(conf: dict[str, Any]) -> None:
        for entry in conf.get("trials") or []:
            trial_lock(entry)

    rewrite(job_dir / "config.json", job)
    rewrite(job_dir / "lock.json", lock)
    for d in job_dir.iterdir():
        if not d.is_dir() or d.is_symlink():
            continue
        for name, edit in (("config.json", trial), ("lock.json", trial_lock)):
            if (d / name).is_file() and not (d / name).is_symlink():
                rewrite(d / name, edit)
    return before[0] if before and before[0] != job_dir else None


def finished(job_dir: Path, rerun_types: Sequence[str], expected: int) -> bool:
    """Whether a job has every trial's result (those that ended in `rerun_types` dropped
    first: they run again)."""
    return keep_results(job_dir, rerun_types) >= expected


_STAGING = threading.Lock()

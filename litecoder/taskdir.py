"""Harbor task directories: layout, task.toml (Harbor's own TaskConfig model) and the static
checks litecoder runs before accepting one.

    <task>/instruction.md
    <task>/task.toml
    <task>/environment/Dockerfile (+ build-context files, + docker-compose.yaml)
    <task>/solution/solve.sh
    <task>/tests/test.sh (writes /logs/verifier/reward.txt) + tests/test_outputs.py
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from litecoder.config import BaseImage, TaskToml
from litecoder.io import StageError

log = logging.getLogger(__name__)

REQUIRED = (
    "instruction.md",
    "task.toml",
    "environment/Dockerfile",
    "solution/solve.sh",
    "tests/test.sh",
)


def compose_override(isolated: bool) -> str:
    """environment/docker-compose.yaml: an init process (the container stops at once instead
    of waiting out Docker's 10 s stop timeout) and, when isolated, no network."""
    lines = ["# Written by litecoder.", "services:", "  main:", "    init: true"]
    if isolated:
        lines.append("    network_mode: none  # no network, enforced by Docker")
    return "\n".join(lines) + "\n"


def harbor_env(**extra: str) -> dict[str, str]:
    """Environment for Harbor subprocesses: offline-safe LiteLLM, no telemetry."""
    return {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HARBOR_TELEMETRY": "0", **extra}


def harbor_bin() -> str:
    """The `harbor` CLI of this environment (beside the interpreter), else from PATH."""
    local = Path(sys.executable).parent / "harbor"
    return str(local) if local.exists() else (shutil.which("harbor") or "harbor")


def die_with_parent() -> None:
    """preexec_fn for Harbor subprocesses: SIGTERM them if litecoder dies (even by SIGKILL),
    so a resumed run never races an orphaned Harbor on the same job directory."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def trial_results(job_dir: Path) -> list[dict[str, Any]]:
    """The finished trials' result.json of a Harbor job directory."""
    return [r for r in map(_read_result, sorted(job_dir.glob("*/result.json"))) if r]


def _read_result(path: Path) -> dict[str, Any] | None:
    # Harbor writes result.json when a trial starts; it is final once finished_at is set.
    r = json.loads(path.read_text())
    return r if r.get("finished_at") else None


def reap_trials(job_dir: Path) -> int:
    """Remove the containers of this job's trials that are still there (Harbor was killed
    before its own teardown). Harbor names each trial's compose project after the trial."""
    if not job_dir.is_dir():
        return 0
    from harbor.environments.docker.docker import _sanitize_docker_compose_project_name

    from litecoder.sandbox import docker_client, remove_compose_projects

    names = [_sanitize_docker_compose_project_name(d.name) for d in job_dir.iterdir() if d.is_dir()]
    removed = remove_compose_projects(docker_client(), names)
    if removed:
        log.warning("removed %d trial container(s) Harbor left in %s", removed, job_dir.name)
    return removed


def run_harbor(
    cmd: list[str],
    *,
    env: dict[str, str],
    job_dir: Path,
    log_path: Path,
    timeout_s: float,
    bar: Any,
) -> tuple[float, int]:
    """Run a Harbor command to the end, advancing `bar` as trial results appear. Trial
    containers a killed earlier run left in `job_dir` are removed first; on timeout, an error
    or an interrupt Harbor is stopped (SIGTERM: it tears its trials down) and whatever it
    left is removed too. Returns (seconds, exit status)."""
    start = time.monotonic()
    reap_trials(job_dir)
    finished = {p for p in job_dir.glob("*/result.json") if _read_result(p)}
    seen = len(finished)

    def advance() -> None:
        # Only unfinished results are read again: a poll costs nothing per finished trial.
        nonlocal seen
        finished.update(
            p for p in job_dir.glob("*/result.json") if p not in finished and _read_result(p)
        )
        bar.advance(len(finished) - seen)
        seen = len(finished)

    with log_path.open("a") as logf:
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
        )
        try:
            while proc.poll() is None:
                time.sleep(1)
                advance()
                if time.monotonic() - start > timeout_s:
                    raise StageError(f"harbor did not finish in {timeout_s:g}s")
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            reap_trials(job_dir)
    advance()
    return time.monotonic() - start, proc.returncode


# --- Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # comment inside a continuation
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            parts = buf.strip().split(None, 1)
            out.append((parts[0].upper(), parts[1] if len(parts) > 1 else ""))
        buf = ""
    if buf.strip():
        parts = buf.strip().split(None, 1)
        out.append((parts[0].upper(), parts[1] if len(parts) > 1 else ""))
    return out


def _copy_sources(args: str) -> tuple[list[str], bool]:
    """Sources of a COPY/ADD and whether it copies from another stage/image (--from)."""
    flags = []
    rest = args.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.strip()
    if rest.startswith("["):  # exec form: ["src", ..., "dest"]
        try:
            items = [str(x) for x in json.loads(rest)]
        except json.JSONDecodeError:
            items = shlex.split(rest)
    else:
        items = shlex.split(rest)
    from_stage = any(f.startswith("--from") for f in flags)
    return items[:-1], from_stage


def check_copy_sources(env_dir: Path) -> list[str]:
    """Every COPY/ADD source must exist in the build context (the 602-env audit's bug)."""
    dockerfile = env_dir / "Dockerfile"
    if not dockerfile.exists():
        return ["environment/Dockerfile does not exist"]
    errors = []
    for instr, args in dockerfile_instructions(dockerfile.read_text()):
        if instr not in ("COPY", "ADD"):
            continue
        sources, from_stage = _copy_sources(args)
        if from_stage:
            continue
        if not sources:
            errors.append(f"{instr} {args!r} has no source")
        for src in sources:
            if instr == "ADD" and re.match(r"^[a-z]+://", src):
                continue  # a URL: checked when the image builds
            rel = src.lstrip("/")
            target = (env_dir / rel).resolve()
            if not str(target).startswith(str(env_dir.resolve())):
                errors.append(f"{instr} source {src!r} is outside the build context")
            elif not glob.glob(str(env_dir / rel)) and not (env_dir / rel).exists():
                errors.append(f"{instr} source {src!r} does not exist in the build context")
    return errors


def render_dockerfile(
    base: BaseImage,
    *,
    has_files: bool,
    deleted: list[str],
    owners: dict[str, str],
    empty_dirs: list[str],
    workdir: str,
    modes: dict[str, str] | None = None,
) -> str:
    """The Dockerfile of a captured starting state: base + the files the agent wrote."""
    q = shlex.quote
    lines = [f"FROM {base.name}", *base.dockerfile_prelude]
    if has_files:
        lines.append("# Files the environment agent created or changed (modes and mtimes kept).")
        lines.append("COPY files/ /")
    fixes = []
    if deleted:
        fixes.append("rm -rf " + " ".join(q(p) for p in sorted(deleted)))
    if empty_dirs:  # dataset stores drop empty directories; git repositories need some
        fixes.append("mkdir -p " + " ".join(q(p) for p in sorted(empty_dirs)))
    for owner in sorted(set(owners.values())):
        paths = sorted(p for p, o in owners.items() if o == owner)
        fixes.append(f"chown -h {owner} " + " ".join(q(p) for p in paths))
    for path, mode in sorted((modes or {}).items()):
        fixes.append(f"chmod {mode} {q(path)}")
    if fixes:
        lines.append("RUN " + " \\\n && ".join(fixes))
    lines.append(f"RUN mkdir -p {q(workdir)}")
    lines.append(f"WORKDIR {workdir}")
    return "\n".join(lines) + "\n"


# --- task.toml ----------------------------------------------------------------------------


def task_toml(task: TaskToml, metadata: dict[str, Any]) -> str:
    """task.toml through Harbor's own model, so that what we write is what Harbor reads."""
    from harbor.models.task.config import TaskConfig

    network_mode = "public" if task.network in ("isolated", "public") else "no-network"
    cfg = TaskConfig.model_validate(
        {
            "metadata": metadata,
            "verifier": {"timeout_sec": task.verifier_timeout_sec},
            "agent": {"timeout_sec": task.agent_timeout_sec},
            "environment": {
                "build_timeout_sec": task.build_timeout_sec,
                "cpus": task.cpus,
                "memory_mb": task.memory_mb,
                "storage_mb": task.storage_mb,
                "network_mode": network_mode,
            },
        }
    )
    return cfg.model_dump_toml()


def check_task_toml(path: Path, expected: TaskToml | None = None) -> list[str]:
    """Parses with Harbor's TaskConfig, no unknown keys, and limits as configured."""
    from harbor.models.task.config import TaskConfig
    from pydantic import BaseModel, ValidationError

    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        return [f"task.toml does not parse: {e}"]
    try:
        cfg = TaskConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        return [f"task.toml: {'.'.join(map(str, first['loc']))}: {first['msg']}"]
    errors = []

    def unknown(data: dict[str, Any], model: type[BaseModel], where: str) -> None:
        fields = model.model_fields
        names = set(fields) | {f.alias for f in fields.values() if f.alias}
        for key, value in data.items():
            if key not in names and not (model is TaskConfig and key == "version"):
                errors.append(f"task.toml: unknown key {where}{key}")
            elif key in fields and isinstance(value, dict) and key != "metadata":
                ann = fields[key].annotation
                sub = next(
                    (
                        a
                        for a in getattr(ann, "__args__", (ann,))
                        if isinstance(a, type) and issubclass(a, BaseModel)
                    ),
                    None,
                )
                if sub is not None:
                    unknown(value, sub, f"{where}{key}.")

    unknown(raw, TaskConfig, "")
    if expected is not None:
        env = cfg.environment
        want = {
            "agent.timeout_sec": (cfg.agent.timeout_sec, expected.agent_timeout_sec),
            "verifier.timeout_sec": (cfg.verifier.timeout_sec, expected.verifier_timeout_sec),
            "environment.build_timeout_sec": (env.build_timeout_sec, expected.build_timeout_sec),
            "environment.cpus": (env.cpus, expected.cpus),
            "environment.memory_mb": (env.memory_mb, expected.memory_mb),
            "environment.storage_mb": (env.storage_mb, expected.storage_mb),
        }
        for key, (got, exp) in want.items():
            if got is None or float(got) != float(exp):
                errors.append(f"task.toml: {key} is {got}, config says {exp}")
    return errors


def check_layout(task_dir: Path) -> list[str]:
    return [f"missing {rel}" for rel in REQUIRED if not (task_dir / rel).is_file()]


def read_metadata(task_dir: Path) -> dict[str, Any]:
    raw = tomllib.loads((task_dir / "task.toml").read_text())
    return raw.get("metadata", {})

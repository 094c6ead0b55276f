"""Harbor task directories: layout, task.toml (Harbor's own TaskConfig model), metadata, the
environment's content hash and the static checks litecoder runs before accepting one.

    <task>/instruction.md
    <task>/task.toml
    <task>/environment/Dockerfile (+ build-context files, + docker-compose.yaml)
    <task>/solution/solve.sh
    <task>/tests/test.sh (writes /logs/verifier/reward.txt) + tests/test_outputs.py
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

from litecoder.config import BaseImage, TaskToml

log = logging.getLogger(__name__)

REQUIRED = (
    "instruction.md",
    "task.toml",
    "environment/Dockerfile",
    "solution/solve.sh",
    "tests/test.sh",
)


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


def check_copy_sources(env_dir: Path, name: str = "Dockerfile") -> list[str]:
    """Every COPY/ADD source must exist in the build context (the 602-env audit's bug), and
    none may be a URL."""
    dockerfile = env_dir / name
    if not dockerfile.is_file():
        return [f"{name} does not exist in its build context"]
    errors = []
    for instr, args in dockerfile_instructions(dockerfile.read_text(errors="replace")):
        if instr not in ("COPY", "ADD"):
            continue
        try:
            sources, from_stage = _copy_sources(args)
        except ValueError as e:  # an unclosed quote
            errors.append(f"{instr} {args[:80]!r} does not parse ({e})")
            continue
        if from_stage:
            continue
        if not sources:
            errors.append(f"{instr} {args!r} has no source")
        for src in sources:
            if REMOTE_SOURCE.match(src):
                # The builder fetches it from the engine's own network namespace, where the
                # host's services (and any gateway) answer, whatever the build network.
                errors.append(
                    f"{instr} {src!r} fetches from the network while the image builds "
                    "(put the file in the build context instead)"
                )
                continue
            rel = src.lstrip("/")
            target = (env_dir / rel).resolve()
            if not str(target).startswith(str(env_dir.resolve())):
                errors.append(f"{instr} source {src!r} is outside the build context")
            elif not glob.glob(str(env_dir / rel)) and not (env_dir / rel).exists():
                errors.append(f"{instr} source {src!r} does not exist in the build context")
    return errors


REMOTE_SOURCE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://|git@)")
TEMPLATE = re.compile(r"\$\{[^}]*\}")


def host_templates(task_dir: Path) -> list[str]:
    """task.toml values that Harbor fills in from the host's environment (`${VAR}`: env
    tables, MCP servers, ...): a task may not name the host's variables ([metadata] aside)."""
    try:
        raw = tomllib.loads((task_dir / "task.toml").read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    out: list[str] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if not (where == "" and k == "metadata"):
                    walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        elif isinstance(value, str) and TEMPLATE.search(value):
            out.append(f"task.toml: {where} = {value[:80]!r} names a host variable")

    walk(raw, "")
    return out


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

    # isolated: the compose file cuts the network (`network_mode: none`), so the task declares
    # no network, as it is run; public: the internet is allowed.
    network_mode = "public" if task.network == "public" else "no-network"
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
    return str(cfg.model_dump_toml())


def check_task_toml(path: Path, expected: TaskToml | None = None) -> list[str]:
    """Parses with Harbor's TaskConfig, no unknown keys, and limits as configured."""
    from harbor.models.task.config import TaskConfig
    from pydantic import BaseModel, ValidationError

    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        return [f"task.toml is not UTF-8 text ({e.reason} at byte {e.start})"]
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
    """task.toml's [metadata] ({} when the file is missing or broken)."""
    try:
        raw = tomllib.loads((task_dir / "task.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    meta: dict[str, Any] = raw.get("metadata", {})
    return meta


def litecoder_meta(task_dir: Path) -> dict[str, Any]:
    """[metadata.litecoder] of a task litecoder built ({} for other tasks)."""
    meta = read_metadata(task_dir).get("litecoder", {})
    return meta if isinstance(meta, dict) else {}


def set_run_environment(toml_path: Path, image: str) -> None:
    """A staged copy's task.toml: a prebuilt image (Harbor then runs it instead of building)
    and Harbor's network policy left open, because litecoder's compose file is what cuts the
    network in a staged copy (Harbor's own `no-network` needs its egress sidecar image)."""
    from harbor.models.task.config import NetworkMode, TaskConfig

    cfg = TaskConfig.model_validate(tomllib.loads(toml_path.read_text()))
    cfg.environment.docker_image = image
    cfg.environment.network_mode = NetworkMode.PUBLIC
    toml_path.write_text(cfg.model_dump_toml())


def set_network_mode(toml_path: Path, mode: str) -> None:
    from harbor.models.task.config import NetworkMode, TaskConfig

    cfg = TaskConfig.model_validate(tomllib.loads(toml_path.read_text()))
    cfg.environment.network_mode = NetworkMode(mode)
    toml_path.write_text(cfg.model_dump_toml())


def walk(directory: Path) -> list[Path]:
    """Every path under a directory, sorted, never following a link."""
    out = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        out += [Path(dirpath) / n for n in [*dirnames, *filenames]]
    return sorted(out)


def content_hash(directory: Path, exclude: tuple[str, ...] = ()) -> str:
    """A hash of a directory's names, modes, link targets and file contents (top-level names
    in `exclude` left out)."""
    h = hashlib.sha256()
    for p in walk(directory):
        rel = p.relative_to(directory).as_posix()
        if rel.split("/")[0] in exclude:
            continue
        st = p.lstat()
        h.update(f"{rel}\0{st.st_mode:o}\0".encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def escaping_links(task_dir: Path) -> list[str]:
    """Symbolic links in a task dir that point outside it (Harbor would follow them)."""
    root = os.path.realpath(task_dir)
    out = []
    for p in walk(task_dir):
        if p.is_symlink():
            target = os.path.realpath(p)
            if not (target == root or target.startswith(root + os.sep)):
                out.append(f"{p.relative_to(task_dir)} links outside the task ({os.readlink(p)})")
    return out


def reach(task_dir: Path) -> list[tuple[str, str]]:
    """(check, problem) for everything in a task dir that could reach the host when litecoder
    runs it: its compose file (`compose.parse`), task.toml values naming host variables,
    Dockerfiles (the main one and sidecars') that fetch at build time or copy from outside
    their context, links out of the task, a separate verifier environment."""
    from litecoder.harbor import compose

    env = task_dir / "environment"
    parsed = compose.parse(env)
    out = [("compose", e) for e in parsed.errors]
    out += [("links", e) for e in escaping_links(task_dir)]
    out += [("templates", e) for e in host_templates(task_dir)]
    if (env / "Dockerfile").is_file():
        out += [("copy_sources", e) for e in check_copy_sources(env)]
    for name, d in parsed.sidecars.items():
        if d.build_context is not None:
            problems = check_copy_sources(env / d.build_context, d.dockerfile)
            out += [("copy_sources", f"services.{name}: {e}") for e in problems]
    try:
        raw = tomllib.loads((task_dir / "task.toml").read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        return [*out, ("task_toml", f"task.toml does not parse: {e}")]
    verifier = raw.get("verifier")
    steps = raw.get("steps")
    steps = steps if isinstance(steps, list) else []
    if (isinstance(verifier, dict) and verifier.get("environment")) or any(
        isinstance(s, dict) and isinstance(s.get("verifier"), dict)
        and s["verifier"].get("environment") for s in steps
    ):  # fmt: skip
        out.append(("verifier", "task.toml: a separate verifier environment is not supported"))
    return out

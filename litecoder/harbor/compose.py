"""A task's compose file, read as data: litecoder starts the services itself.

No compose file of a task is ever handed to `docker compose` (which would substitute `${VAR}`
from the host's environment and `.env` files, read `env_file`s and honour whatever else the
file says). litecoder parses it without interpolation into the services it understands and
starts those with its own hardening (`litecoder.sandbox.trial`):

- per service: `image` or `build` (a context inside environment/, a Dockerfile name, literal
  build args), `command`, `entrypoint`, `environment` (literal values), `working_dir`,
  `user`, `healthcheck`, `depends_on`;
- ignored, because litecoder decides them: the main service's build/image/command/deploy
  (Harbor's placeholders in a migrated Terminal-Bench task), every service's resource limits,
  restart policy, labels, tty and similar;
- refused, with the key named: everything else (volumes, env_file, ports, network and
  namespace settings, capabilities, devices, security options, secrets, includes, ...) and
  any `$` in a value (variable substitution). The only placeholder litecoder resolves itself
  is Harbor's `TEST_DIR=${TEST_DIR}` (the tests' directory, /tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

COMPOSE_NAMES = ("docker-compose.yaml", "docker-compose.yml", "compose.yaml", "compose.yml")
MAIN = "main"
KNOWN_PLACEHOLDERS = {"${TEST_DIR}": "/tests"}  # Harbor's own, in migrated tasks
TOP_ALLOWED = {"services", "version", "name"}
SERVICE_KEYS = {"image", "build", "command", "entrypoint", "environment", "working_dir", "user",
                "healthcheck", "depends_on"}  # fmt: skip
IGNORED = {"container_name", "init", "tty", "stdin_open", "expose", "restart", "labels",
           "hostname", "stop_signal", "stop_grace_period", "deploy", "mem_limit",
           "memswap_limit", "mem_reservation", "cpus", "cpu_shares", "pids_limit", "platform",
           "pull_policy"}  # fmt: skip
HARBOR_OWNS = ("build", "image", "command", "container_name", "deploy", "network_mode")
BUILD_KEYS = {"context", "dockerfile", "args"}


@dataclass
class Declared:
    """One service as the task declares it (checked, not yet built)."""

    name: str
    image: str | None = None
    build_context: str | None = None  # relative to environment/
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None
    healthcheck: dict[str, Any] | None = None  # litecoder.sandbox.trial.Healthcheck fields
    depends_on: list[str] = field(default_factory=list)


@dataclass
class Parsed:
    services: dict[str, Declared] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def sidecars(self) -> dict[str, Declared]:
        return {k: v for k, v in self.services.items() if k != MAIN}


def compose_path(env_dir: Path) -> Path | None:
    return next((env_dir / n for n in COMPOSE_NAMES if (env_dir / n).exists()), None)


def parse(env_dir: Path) -> Parsed:
    """The task's services (main always there) and why any part of its compose file cannot
    run (empty errors: all of it can)."""
    out = Parsed()
    path = compose_path(env_dir)
    out.services[MAIN] = Declared(MAIN)
    if path is None:
        return out
    where = f"environment/{path.name}"
    try:
        doc = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        out.errors.append(f"{where}: not valid YAML ({str(e).splitlines()[0]})")
        return out
    if doc is None:
        return out
    if not isinstance(doc, dict):
        out.errors.append(f"{where}: not a mapping")
        return out
    for key in doc:
        if key not in TOP_ALLOWED and not str(key).startswith("x-"):
            out.errors.append(f"{where}: {key}: not supported (litecoder starts the services)")
    services = doc.get("services") or {}
    if not isinstance(services, dict):
        out.errors.append(f"{where}: services is not a mapping")
        return out
    for name, svc in services.items():
        at = f"{where}: services.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name):
            out.errors.append(f"{at}: not a usable service name")
            continue
        if not isinstance(svc, dict):
            if svc is not None:
                out.errors.append(f"{at}: not a mapping")
            continue
        out.services[name] = _service(name, svc, at, env_dir, out.errors)
    for name, d in out.services.items():
        for dep in d.depends_on:
            if dep not in out.services:
                out.errors.append(f"{where}: services.{name}.depends_on: unknown service {dep}")
        if name != MAIN and not (d.image or d.build_context):
            out.errors.append(f"{where}: services.{name}: neither image nor build")
    return out


def check(env_dir: Path) -> list[str]:
    """Why this compose file may not run (empty: it may)."""
    return parse(env_dir).errors


def _service(name: str, svc: dict[str, Any], at: str, env_dir: Path, errors: list[str]) -> Declared:
    d = Declared(name)
    svc = dict(svc)
    if name == MAIN:
        mode = svc.get("network_mode")
        if mode is not None and str(mode) not in ("none", "default", "bridge"):
            errors.append(f"{at}.network_mode: {mode!r} (litecoder decides the network)")
        for key in HARBOR_OWNS:
            svc.pop(key, None)
        env = svc.get("environment")
        if env is not None:
            svc["environment"] = _resolve_placeholders(env)
    for key, value in svc.items():
        if key in IGNORED:
            continue
        if key not in SERVICE_KEYS:
            errors.append(f"{at}.{key}: not supported by litecoder's trial environment")
            continue
        for text in _strings(value):
            if "$" in text:
                errors.append(f"{at}.{key}: {text!r} uses variable substitution")
                break
        else:
            _set(d, key, value, f"{at}.{key}", env_dir, errors)
    return d


def _set(d: Declared, key: str, value: Any, at: str, env_dir: Path, errors: list[str]) -> None:
    if key == "image":
        d.image = str(value)
    elif key == "build":
        spec = {"context": value} if isinstance(value, str) else value
        if not isinstance(spec, dict):
            errors.append(f"{at}: not a context or a mapping")
            return
        for k in spec:
            if k not in BUILD_KEYS:
                errors.append(f"{at}.{k}: not supported (litecoder builds the image)")
        ctx = str(spec.get("context", "."))
        if _outside(ctx):
            errors.append(f"{at}.context: {ctx!r} is outside the environment dir")
            return
        if not (env_dir / ctx).is_dir():
            errors.append(f"{at}.context: {ctx!r} is not a directory of environment/")
            return
        d.build_context = ctx
        d.dockerfile = str(spec.get("dockerfile", "Dockerfile"))
        if _outside(d.dockerfile):
            errors.append(f"{at}.dockerfile: {d.dockerfile!r} is outside the context")
        d.build_args = _mapping(spec.get("args"), f"{at}.args", errors)
    elif key in ("command", "entrypoint"):
        argv = _argv(value)
        if argv is None:
            errors.append(f"{at}: neither a string nor a list of strings")
        elif key == "command":
            d.command = argv
        else:
            d.entrypoint = argv
    elif key == "environment":
        d.environment = _mapping(value, at, errors)
    elif key in ("working_dir", "user"):
        setattr(d, key, str(value))
    elif key == "depends_on":
        if isinstance(value, dict | list):
            d.depends_on = [str(k) for k in value]
        else:
            errors.append(f"{at}: neither a list nor a mapping")
    elif key == "healthcheck":
        d.healthcheck = _healthcheck(value, at, errors)


def _resolve_placeholders(env: Any) -> Any:
    def fix(v: Any) -> Any:
        return KNOWN_PLACEHOLDERS.get(v, v) if isinstance(v, str) else v

    if isinstance(env, dict):
        return {k: fix(v) for k, v in env.items()}
    if isinstance(env, list):
        out = []
        for item in env:
            k, sep, v = str(item).partition("=")
            out.append(f"{k}={fix(v)}" if sep else item)
        return out
    return env


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _mapping(value: Any, at: str, errors: list[str]) -> dict[str, str]:
    """A compose mapping or KEY=VALUE list, with literal values only. A bare KEY (compose
    takes its value from the host's environment) is refused."""
    out: dict[str, str] = {}
    if value is None:
        return out
    items: list[tuple[str, Any]]
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = []
        for entry in value:
            k, sep, v = str(entry).partition("=")
            items.append((k, v if sep else None))
    else:
        errors.append(f"{at}: neither a mapping nor a list")
        return out
    for k, v in items:
        if v is None:
            errors.append(f"{at}: {k} takes its value from the host's environment")
        elif isinstance(v, dict | list):
            errors.append(f"{at}: {k} is not a plain value")
        else:
            out[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _argv(value: Any) -> list[str] | None:
    import shlex

    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError:
            return None
    if isinstance(value, list) and all(isinstance(x, str | int | float) for x in value):
        return [str(x) for x in value]
    return None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _seconds(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _healthcheck(value: Any, at: str, errors: list[str]) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        errors.append(f"{at}: not a mapping")
        return None
    if value.get("disable"):
        return None
    test = value.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not (isinstance(test, list) and test and all(isinstance(x, str) for x in test)):
        errors.append(f"{at}.test: neither a string nor a list of strings")
        return None
    if test[0] == "NONE":
        return None
    out: dict[str, Any] = {"test": test}
    for key, name in (("interval", "interval_s"), ("timeout", "timeout_s"),
                      ("start_period", "start_period_s")):  # fmt: skip
        if key in value:
            secs = _seconds(value[key])
            if secs is None:
                errors.append(f"{at}.{key}: {value[key]!r} is not a duration")
            else:
                out[name] = secs
    if "retries" in value:
        try:
            out["retries"] = int(value["retries"])
        except (TypeError, ValueError):
            errors.append(f"{at}.retries: not a number")
    for key in value:
        if key not in ("test", "interval", "timeout", "start_period", "retries", "disable",
                       "start_interval"):  # fmt: skip
            errors.append(f"{at}.{key}: not supported")
    return out


def _outside(path: str) -> bool:
    p = PurePosixPath(path)
    return p.is_absolute() or ".." in p.parts

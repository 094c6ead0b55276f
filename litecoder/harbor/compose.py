"""The compose file of a task's environment: litecoder writes it, and checks anyone else's.

Harbor merges `environment/docker-compose.yaml` over its own compose files, so whatever a
task's compose file says about its containers is what a trial gets. litecoder therefore writes
that file itself (an agent never may) and refuses task dirs whose compose file mounts host
paths, runs privileged, adds capabilities or devices, shares host namespaces or the host
network, publishes ports, or reads host files (env files, configs, secrets, includes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

COMPOSE_NAMES = ("docker-compose.yaml", "docker-compose.yml", "compose.yaml", "compose.yml")
MAIN = "main"
HARBOR_OWNS = ("build", "image", "command", "container_name", "deploy", "network_mode")


@dataclass(frozen=True)
class Hardening:
    """What every trial container gets, whatever the task asks for."""

    capabilities: tuple[str, ...]
    pids: int
    network: bool = False  # may the trial reach the network?
    memory_mb: int | None = None  # None: Harbor's (the task's) limit, without swap
    storage_size: str | None = None  # a hard disk quota ("12000M"); None: none
    labels: tuple[tuple[str, str], ...] = ()


def compose_path(env_dir: Path) -> Path | None:
    return next((env_dir / n for n in COMPOSE_NAMES if (env_dir / n).exists()), None)


def load(env_dir: Path) -> dict[str, Any]:
    """The task's own compose document ({} when there is none)."""
    path = compose_path(env_dir)
    if path is None:
        return {}
    doc = yaml.safe_load(path.read_text())
    return doc if isinstance(doc, dict) else {}


def render(h: Hardening, original: dict[str, Any] | None = None) -> str:
    """environment/docker-compose.yaml: the task's (checked) services with litecoder's limits.

    Harbor's own compose files set the image, command, CPUs and memory; this file comes after
    them and wins. Values come from the config and task.toml, never from what a model wrote."""
    services: dict[str, Any] = dict((original or {}).get("services") or {})
    services.setdefault(MAIN, {})
    multi = len(services) > 1
    out: dict[str, Any] = {"services": {}}
    for name, svc in services.items():
        s = dict(svc or {})
        if name == MAIN:
            # Harbor's own compose files say how the main container is built and started
            # (a migrated Terminal-Bench task repeats them with placeholders): they stay
            # Harbor's, so a staged copy runs its prebuilt image.
            for key in HARBOR_OWNS:
                s.pop(key, None)
        s.update(
            {
                "init": True,
                "privileged": False,
                "cap_drop": ["ALL"],
                "cap_add": list(h.capabilities),
                "security_opt": ["no-new-privileges:true"],
                "pids_limit": h.pids,
            }
        )
        if h.labels:
            s["labels"] = dict(h.labels)
        if name == MAIN:
            if h.memory_mb:
                s["mem_limit"] = s["memswap_limit"] = f"{h.memory_mb}m"
            if h.storage_size:
                s["storage_opt"] = {"size": h.storage_size}
            if not h.network and not multi:
                s["network_mode"] = "none"
        out["services"][name] = s
    if multi or h.network:
        # Services reach each other; the internet only when allowed.
        net: dict[str, Any] = {"internal": not h.network}
        if h.labels:
            net["labels"] = dict(h.labels)
        out["networks"] = {"default": net}
    header = "# Written by litecoder: the limits every container of this task runs under.\n"
    return header + yaml.safe_dump(out, sort_keys=False)


# --- checks -----------------------------------------------------------------------------------

FORBIDDEN_TOP = {
    "include": "includes other compose files",
    "secrets": "reads host files (secrets)",
    "configs": "reads host files (configs)",
}
FORBIDDEN_SERVICE = {
    "devices": "gives the container host devices",
    "device_cgroup_rules": "opens host devices",
    "volumes_from": "mounts another container's volumes",
    "cgroup_parent": "chooses its host cgroup",
    "ports": "publishes ports on the host",
    "extends": "extends another compose file",
    "runtime": "chooses the container runtime",
    "gpus": "asks for host GPUs",
    "sysctls": "changes kernel settings",
    "oom_kill_disable": "disables the OOM killer",
}
HOST_NAMESPACES = ("pid", "ipc", "uts", "userns_mode", "cgroup")


def check(env_dir: Path, allowed_caps: tuple[str, ...] | list[str]) -> list[str]:
    """Why this compose file may not run (empty: it may)."""
    path = compose_path(env_dir)
    if path is None:
        return []
    where = f"environment/{path.name}"
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        return [f"{where}: not valid YAML ({str(e).splitlines()[0]})"]
    if doc is None:
        return []
    if not isinstance(doc, dict):
        return [f"{where}: not a mapping"]
    errors = [f"{where}: {k}: {why}" for k, why in FORBIDDEN_TOP.items() if k in doc]
    for kind in ("networks", "volumes"):
        for name, spec in (doc.get(kind) or {}).items():
            spec = spec or {}
            if not isinstance(spec, dict):
                continue
            if spec.get("external"):
                errors.append(f"{where}: {kind}.{name}: uses an existing host {kind[:-1]}")
            if spec.get("driver_opts"):
                errors.append(f"{where}: {kind}.{name}: driver options (host paths, devices)")
            if kind == "networks" and spec.get("driver") in ("host", "macvlan", "ipvlan"):
                errors.append(f"{where}: networks.{name}: driver {spec['driver']}")
    services = doc.get("services") or {}
    if not isinstance(services, dict):
        return [*errors, f"{where}: services is not a mapping"]
    for name, svc in services.items():
        at = f"{where}: services.{name}"
        if not isinstance(svc, dict):
            errors.append(f"{at}: not a mapping")
            continue
        errors += [f"{at}.{k}: {why}" for k, why in FORBIDDEN_SERVICE.items() if k in svc]
        if svc.get("privileged"):
            errors.append(f"{at}.privileged: runs privileged")
        extra = sorted({str(c).upper().removeprefix("CAP_") for c in svc.get("cap_add") or []})
        extra = [c for c in extra if c not in allowed_caps]
        if extra:
            errors.append(f"{at}.cap_add: adds capabilities {extra}")
        for ns in HOST_NAMESPACES:
            if str(svc.get(ns, "")).startswith("host"):
                errors.append(f"{at}.{ns}: shares the host's namespace")
        if str(svc.get("network_mode", "")) == "host":
            errors.append(f"{at}.network_mode: uses the host network")
        for opt in svc.get("security_opt") or []:
            if not str(opt).startswith("no-new-privileges"):
                errors.append(f"{at}.security_opt: {opt!r} loosens confinement")
        for vol in svc.get("volumes") or []:
            why = _host_mount(vol)
            if why:
                errors.append(f"{at}.volumes: {why}")
        for f in _as_list(svc.get("env_file")):
            p = f.get("path") if isinstance(f, dict) else f
            if _outside(env_dir, str(p)):
                errors.append(f"{at}.env_file: {p!r} is outside the environment dir")
        build = svc.get("build")
        if isinstance(build, dict):
            if _outside(env_dir, str(build.get("context", "."))):
                errors.append(f"{at}.build.context: outside the environment dir")
            for k in ("additional_contexts", "secrets", "ssh", "entitlements", "privileged"):
                if build.get(k):
                    errors.append(f"{at}.build.{k}: not allowed")
            if build.get("network") == "host":
                errors.append(f"{at}.build.network: uses the host network")
        elif isinstance(build, str) and _outside(env_dir, build):
            errors.append(f"{at}.build: context outside the environment dir")
    return errors


def _as_list(v: Any) -> list[Any]:
    return [] if v is None else v if isinstance(v, list) else [v]


def _outside(env_dir: Path, path: str) -> bool:
    p = PurePosixPath(path)
    return p.is_absolute() or ".." in p.parts


def _host_mount(vol: Any) -> str | None:
    """Why a volume entry mounts something of the host (None: a named volume or a tmpfs)."""
    if isinstance(vol, dict):
        kind = vol.get("type", "volume")
        if kind in ("bind", "npipe", "cluster"):
            return f"host mount of {vol.get('source')!r}"
        return None
    text = str(vol)
    source = text.split(":", 1)[0] if ":" in text else ""
    if source.startswith(("/", ".", "~", "$")):
        return f"host mount {text!r}"
    return None

"""The Docker engine as litecoder uses it: the client, ownership labels, cleanup and the
disk-quota check.

Everything litecoder creates carries its labels, set on purpose: containers, networks and
volumes (Harbor's trial containers too, through litecoder's compose file) the `litecoder`
label, images the `litecoder.image` label, each with `litecoder.run`, `litecoder.kind` and
`litecoder.project` (the project root that made it; not on the shared base image). Images never
carry `litecoder` itself: a container inherits its image's labels, and one that someone else
starts from a litecoder image is not litecoder's. `litecoder clean` removes exactly what carries
them, for one project unless told otherwise: two experiments on one Docker host do not remove
each other's running containers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LABEL = "litecoder"  # containers, networks, volumes
IMAGE_LABEL = "litecoder.image"  # images (value: the kind)
PROJECT_LABEL = "litecoder.project"  # the project root, on both
# The capabilities a root shell needs for file work, users and its own processes (and binding
# low ports inside its own network namespace). Everything else stays dropped: SYS_ADMIN
# (mount), MKNOD (device nodes), NET_RAW, SYS_CHROOT, SETFCAP, SYS_PTRACE, AUDIT_WRITE, ...
CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE"]
# Images `litecoder clean` keeps unless asked (--images, --base-image).
KEPT_IMAGE_KINDS = ("base-image", "task-image", "trial-image")


class SandboxError(RuntimeError):
    """A Docker problem, as one line."""


class DockerUnavailable(SandboxError):
    pass


class DiskQuotaUnsupported(SandboxError):
    """The engine cannot put a hard disk quota on a container."""


class BuildError(SandboxError):
    def __init__(self, message: str, log_tail: str):
        super().__init__(message)
        self.log_tail = log_tail


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def docker_client(timeout: int = 600) -> Any:
    """A connected docker client, or a one-line DockerUnavailable."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:  # pragma: no cover
        raise DockerUnavailable(
            "the docker Python SDK is not installed (pip install docker)"
        ) from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except DockerException as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "FileNotFoundError" in msg or "No such file" in msg or "Connection refused" in msg:
            msg = "the Docker engine is not running (start dockerd, or run scripts/setup.sh)"
        raise DockerUnavailable(f"Docker is not available: {msg}") from None


_project: str | None = None


def container_host(client: Any | None = None) -> str:
    """The host's address on Docker's default bridge: what a container with a network reaches
    the host at (a listener bound there serves containers, and no other machine)."""
    net = (client or docker_client()).networks.get("bridge")
    for conf in net.attrs.get("IPAM", {}).get("Config") or []:
        if conf.get("Gateway"):
            return str(conf["Gateway"])
        if conf.get("Subnet"):  # recent engines leave the default gateway (the first host) out
            subnet = ipaddress.ip_network(conf["Subnet"])
            if subnet.version == 4:
                return str(next(subnet.hosts()))
    raise SandboxError("Docker's default bridge network has no gateway address")


def set_project(root: Path) -> None:
    """The project root this process works for (a stage sets it; by default the working dir)."""
    global _project
    _project = str(root.resolve())


def project() -> str:
    return _project or str(Path.cwd().resolve())


def labels(run: str, task: str | None, kind: str, *, owner: bool = False) -> dict[str, str]:
    """litecoder's labels of a container, network or volume; `owner` adds this process and
    host (orphans of a killed run are found by them)."""
    out = {LABEL: "1", f"{LABEL}.run": run, f"{LABEL}.kind": kind, PROJECT_LABEL: project()}
    if task:
        out[f"{LABEL}.task"] = task
    if owner:
        out[f"{LABEL}.pid"] = str(os.getpid())
        out[f"{LABEL}.host"] = socket.gethostname()
    return out


def image_labels(run: str, task: str | None, kind: str) -> dict[str, str]:
    """litecoder's labels of an image it builds (no `litecoder` key: see the module doc)."""
    out = {IMAGE_LABEL: kind, f"{LABEL}.run": run, f"{LABEL}.kind": kind, PROJECT_LABEL: project()}
    if task:
        out[f"{LABEL}.task"] = task
    return out


class Registry:
    """Containers of this process, removed on exit or on SIGINT/SIGTERM."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.containers: dict[str, Any] = {}

    def add(self, container: Any) -> None:
        with self._lock:
            self.containers[container.id] = container

    def discard(self, container_id: str) -> None:
        with self._lock:
            self.containers.pop(container_id, None)

    def remove_all(self) -> int:
        with self._lock:
            items = list(self.containers.values())
            self.containers.clear()
        for c in items:
            with contextlib.suppress(Exception):
                c.remove(force=True)
        return len(items)


REGISTRY = Registry()


@contextlib.contextmanager
def cleanup_on_signals() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C; either way every live container is removed."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        n = REGISTRY.remove_all()
        if n:
            log.info("removed %d sandbox container(s)", n)
        if in_main:
            signal.signal(signal.SIGTERM, previous)


# --- disk quotas ------------------------------------------------------------------------------

# engine -> (why it cannot enforce a quota, or None; whether quotas count the image's files)
_QUOTA_PROBES: dict[str, tuple[str | None, bool]] = {}
QUOTA_HELP = (
    "per-container disk quotas need Docker's btrfs or zfs storage driver, or overlay2 on xfs "
    "mounted with pquota (scripts/setup.sh starts such an engine when none is running); or "
    "run without a disk cap: security.disk_quota=false"
)


def _probe(client: Any, image: str, size_mb: int) -> str | None:
    from docker.errors import APIError

    try:
        c = client.containers.create(
            image,
            ["true"],
            labels=labels("quota-probe", None, "quota-probe"),
            network_mode="none",
            storage_opt={"size": f"{size_mb}M"},
        )
        c.remove(force=True)
        return None
    except APIError as e:
        return one_line(e)


def _quota(client: Any, image: str) -> tuple[str | None, bool]:
    """Probed once per engine: can it enforce `storage_opt size`, and does the size count the
    image's own files (btrfs qgroups, overlay2 quotas) or only what a container writes (btrfs
    simple quotas)?"""
    key = str(getattr(client.api, "base_url", "default"))
    if key not in _QUOTA_PROBES:
        image_mb = client.images.get(image).attrs.get("Size", 0) // 2**20
        if _probe(client, image, 64) is None:
            _QUOTA_PROBES[key] = (None, image_mb <= 64)
        else:
            err = _probe(client, image, image_mb + 64)
            driver = client.info().get("Driver", "?")
            problem = f"the Docker engine cannot enforce a disk quota (driver {driver}: {err})"
            _QUOTA_PROBES[key] = (problem if err else None, True)
    return _QUOTA_PROBES[key]


def disk_quota_problem(client: Any, image: str) -> str | None:
    """None when the engine enforces `storage_opt size`, else why not."""
    return _quota(client, image)[0]


def require_disk_quota(client: Any, image: str) -> None:
    problem = disk_quota_problem(client, image)
    if problem:
        raise DiskQuotaUnsupported(f"{problem}; {QUOTA_HELP}")


def storage_size(client: Any, image: str, disk_mb: int) -> str:
    """The `storage_opt size` that leaves `disk_mb` of writable space to a container of
    `image`."""
    counts_image = _quota(client, image)[1]
    image_mb = client.images.get(image).attrs.get("Size", 0) // 2**20 if counts_image else 0
    return f"{image_mb + disk_mb}M"


# --- cleanup ------------------------------------------------------------------------------


def remove_labelled(
    client: Any,
    *,
    run: str | None = None,
    project: str | None = None,
    images: bool = False,
    base_images: bool = False,
) -> dict[str, int]:
    """Remove what litecoder made: containers, networks and volumes carrying its label, images
    built for a run; with `images` also kept task and trial images, with `base_images` the base
    image too (it belongs to no project). `run` or `project` narrow it down. `litecoder clean`."""
    scope = [f"{LABEL}.run={run}"] if run else []
    scope += [f"{PROJECT_LABEL}={project}"] if project else []
    flt = [LABEL, *scope]
    img_flt = [IMAGE_LABEL, *scope]
    removed = {"containers": 0, "networks": 0, "volumes": 0, "images": 0}
    for c in client.containers.list(all=True, ignore_removed=True, filters={"label": flt}):
        with contextlib.suppress(Exception):
            c.remove(force=True, v=True)
            removed["containers"] += 1
    for n in client.networks.list(filters={"label": flt}):
        with contextlib.suppress(Exception):
            n.remove()
            removed["networks"] += 1
    for v in client.volumes.list(filters={"label": flt}):
        with contextlib.suppress(Exception):
            v.remove(force=True)
            removed["volumes"] += 1
    imgs = client.images.list(filters={"label": img_flt})
    if base_images and project:  # the base image carries no project label
        imgs += client.images.list(filters={"label": [f"{IMAGE_LABEL}=base-image"]})
    for img in imgs:
        kind = (img.labels or {}).get(IMAGE_LABEL)
        if kind == "base-image" and not base_images:
            continue
        if kind in KEPT_IMAGE_KINDS and kind != "base-image" and not images:
            continue
        with contextlib.suppress(Exception):
            client.images.remove(img.id, force=True)
            removed["images"] += 1
    # Finished images of litecoder's that lost their tag (rebuilt under it, e.g. after a killed
    # run) are never useful. Safe while other builds run: the label is set on a build's final
    # image only, which is tagged as it is made; intermediate layers carry no label.
    with contextlib.suppress(Exception):
        pruned = client.images.prune(filters={"dangling": True, "label": img_flt})
        removed["images"] += len(pruned.get("ImagesDeleted") or [])
    return removed


def remove_containers(client: Any, run: str) -> int:
    """Remove the containers (and networks, volumes) of one run; its images stay."""
    flt = [LABEL, f"{LABEL}.run={run}"]
    n = 0
    for c in client.containers.list(all=True, ignore_removed=True, filters={"label": flt}):
        with contextlib.suppress(Exception):
            c.remove(force=True, v=True)
            n += 1
    for net in client.networks.list(filters={"label": flt}):
        with contextlib.suppress(Exception):
            net.remove()
    for v in client.volumes.list(filters={"label": flt}):
        with contextlib.suppress(Exception):
            v.remove(force=True)
    return n


# Each build lists its intermediate images here, so that those of a killed build can be removed.

LEDGER_DIR = Path(tempfile.gettempdir()) / "litecoder-builds"


def remove_killed_builds(client: Any) -> int:
    """The intermediate images of builds whose process was killed (SIGKILL) before it could
    remove them: listed in its ledger, removed while nothing else uses them."""
    n = 0
    for ledger in LEDGER_DIR.glob("*.layers"):
        pid = ledger.name.split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and Path(f"/proc/{pid}").exists():
            continue  # that build is still running
        ids = ledger.read_text().split()
        for image_id in reversed(ids):
            with contextlib.suppress(Exception):
                if not client.images.get(image_id).tags:
                    client.images.remove(image_id, noprune=False)
                    n += 1
        ledger.unlink(missing_ok=True)
    return n


def remove_orphans(client: Any) -> int:
    """Containers, and intermediate build images, of litecoder processes on this host that
    died (SIGKILL)."""
    n = remove_killed_builds(client)
    host = socket.gethostname()
    for c in client.containers.list(
        all=True, ignore_removed=True, filters={"label": [f"{LABEL}.pid"]}
    ):
        lab = c.labels
        if lab.get(f"{LABEL}.host", host) != host:
            continue
        pid = int(lab.get(f"{LABEL}.pid", "0"))
        # At stage start this process has no containers yet, so its own pid counts as dead.
        alive = pid > 0 and pid != os.getpid() and Path(f"/proc/{pid}").exists()
        if not alive:
            with contextlib.suppress(Exception):
                c.remove(force=True)
                n += 1
    return n

"""The sandbox layer: all Docker use in litecoder goes through this module (docker SDK).

Containers run unprivileged: every capability dropped but the few a root shell needs for file
work, `no-new-privileges`, CPU / memory (no swap) / pids limits, no network unless allowed,
no host mounts and no Docker socket. Each command runs under `timeout` inside the container
and a host-side deadline outside it. Everything created is labelled (`litecoder.run`,
`litecoder.task`, `litecoder.kind`) so that `litecoder clean` and signal handlers find it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shlex
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LABEL = "litecoder"
# Capabilities a root shell needs to manage files it owns; everything else (SYS_ADMIN for
# mount, NET_ADMIN, SYS_PTRACE, MKNOD, ...) stays dropped.
CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL"]
OOM_FILES = ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events")


class SandboxError(RuntimeError):
    """A Docker problem, as one line."""


class DockerUnavailable(SandboxError):
    pass


class BuildError(SandboxError):
    def __init__(self, message: str, log_tail: str):
        super().__init__(message)
        self.log_tail = log_tail


@dataclass(frozen=True)
class Limits:
    cpus: float = 1.0
    memory_mb: int = 1024
    pids: int = 256
    network: bool = False
    command_timeout_s: float = 60.0
    output_chars: int = 8000


@dataclass
class ExecResult:
    exit_code: int
    output: str
    duration_s: float
    truncated: bool = False
    timed_out: bool = False
    oom_killed: bool = False
    pids_exhausted: bool = False

    @property
    def violation(self) -> str | None:
        """Why the sandbox had to stop this command, if it did."""
        if self.pids_exhausted:
            return "process limit reached (fork bomb?)"
        if self.oom_killed:
            return "killed: out of memory"
        if self.timed_out:
            return f"command timed out after {self.duration_s:.0f}s"
        return None


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


def labels(run: str, task: str | None, kind: str) -> dict[str, str]:
    out = {LABEL: "1", f"{LABEL}.run": run, f"{LABEL}.kind": kind}
    if task:
        out[f"{LABEL}.task"] = task
    return out


class Registry:
    """Containers and images of this process, removed on exit or on SIGINT/SIGTERM."""

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


@dataclass
class Sandbox:
    """One long-lived container (`sleep infinity`) to run commands in."""

    image: str
    limits: Limits
    labels: dict[str, str]
    client: Any = None
    workdir: str = "/"
    container: Any = field(default=None, init=False)

    def start(self) -> Sandbox:
        self.client = self.client or docker_client()
        lim = self.limits
        try:
            self.container = self.client.containers.run(
                self.image,
                ["sleep", "infinity"],
                detach=True,
                labels=self.labels,
                network_mode="bridge" if lim.network else "none",
                nano_cpus=int(lim.cpus * 1e9),
                mem_limit=f"{lim.memory_mb}m",
                memswap_limit=f"{lim.memory_mb}m",
                pids_limit=lim.pids,
                cap_drop=["ALL"],
                cap_add=CAPS,
                security_opt=["no-new-privileges"],
                working_dir=self.workdir,
                init=True,
            )
        except Exception as e:
            raise SandboxError(
                f"cannot start a container from {self.image}: {_one_line(e)}"
            ) from None
        REGISTRY.add(self.container)
        return self

    def close(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.remove(force=True)
            REGISTRY.discard(self.container.id)
            self.container = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands --

    def exec(
        self, command: str, timeout_s: float | None = None, workdir: str | None = None
    ) -> ExecResult:
        """Run `bash -c command`; output (stdout+stderr) truncated to limits.output_chars."""
        timeout_s = timeout_s or self.limits.command_timeout_s
        wrapped = ["timeout", "-k", "5", str(int(max(1, timeout_s))), "bash", "-c", command]
        oom_before = self._oom_count()
        start = time.monotonic()
        api = self.client.api
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                ex = api.exec_create(self.container.id, wrapped, workdir=workdir or self.workdir)
                result["out"] = api.exec_start(ex["Id"])
                result["code"] = api.exec_inspect(ex["Id"])["ExitCode"]
            except Exception as e:
                result["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(timeout_s + 30)  # host-side deadline in case the in-container one fails
        duration = time.monotonic() - start
        if t.is_alive():
            self.close()  # the only way to stop an exec the engine will not stop
            return ExecResult(137, "", duration, timed_out=True)
        if "error" in result:
            raise SandboxError(f"exec failed: {_one_line(result['error'])}")
        text = (result["out"] or b"").decode("utf-8", "replace")
        code = result["code"] if result["code"] is not None else -1
        res = ExecResult(code, text, duration)
        if len(text) > self.limits.output_chars:
            half = self.limits.output_chars // 2
            res.output = (
                f"{text[:half]}\n[... {len(text) - 2 * half} chars truncated ...]\n{text[-half:]}"
            )
            res.truncated = True
        res.timed_out = code == 124 or (code == 137 and duration >= timeout_s)
        if code in (125, 126, 137) or "Resource temporarily unavailable" in text:
            res.pids_exhausted = self._pids_exhausted()
            if not res.pids_exhausted and code == 137 and not res.timed_out:
                res.oom_killed = self._oom_count() > oom_before
        return res

    def _oom_count(self) -> int:
        with contextlib.suppress(Exception):
            out = self.container.exec_run(["cat", *OOM_FILES]).output.decode()
            for line in out.splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return 0

    def _pids_exhausted(self) -> bool:
        with contextlib.suppress(Exception):
            stats = self.container.stats(stream=False, one_shot=True)
            pids = stats.get("pids_stats") or {}
            return bool(pids.get("limit")) and pids.get("current", 0) >= pids["limit"] - 2
        return False

    # -- files --

    def write_file(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        data = content.encode() if isinstance(content, str) else content
        p = Path(path)
        if not p.is_absolute():
            p = Path(self.workdir) / p
        self.exec(f"mkdir -p {shlex.quote(str(p.parent))}")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(p.name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        if not self.container.put_archive(str(p.parent), buf.getvalue()):
            raise SandboxError(f"could not write {p}")

    def put_dir(self, src: Path, dest: str) -> None:
        """Copy a host directory's contents to `dest` in the container."""
        self.exec(f"mkdir -p {shlex.quote(dest)}")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for child in sorted(src.iterdir()):
                tar.add(child, arcname=child.name)
        self.container.put_archive(dest, buf.getvalue())

    def get_archive(self, path: str) -> bytes:
        stream, _ = self.container.get_archive(path)
        return b"".join(stream)

    def diff(self) -> list[dict[str, Any]]:
        return self.container.diff() or []


def build_image(
    client: Any, context: Path, tag: str, labels: dict[str, str], timeout_s: float
) -> str:
    """`docker build` of a directory (its Dockerfile), offline. Returns the image id."""
    from docker.errors import APIError
    from docker.errors import BuildError as DockerBuildError

    lines: list[str] = []
    start = time.monotonic()
    try:
        for chunk in client.api.build(
            path=str(context),
            tag=tag,
            labels=labels,
            rm=True,
            forcerm=True,
            decode=True,
            timeout=int(timeout_s),
        ):
            if "stream" in chunk:
                lines.append(chunk["stream"])
            if "error" in chunk:
                tail = "".join(lines[-30:]) + chunk["error"]
                raise BuildError(f"docker build failed: {chunk['error'].strip()}", tail)
            if time.monotonic() - start > timeout_s:
                raise BuildError(
                    f"docker build timed out after {timeout_s:.0f}s", "".join(lines[-30:])
                )
    except (APIError, DockerBuildError) as e:
        raise BuildError(f"docker build failed: {_one_line(e)}", "".join(lines[-30:])) from None
    except BuildError:
        _prune_build_leftovers(client, labels)
        raise
    return client.images.get(tag).id


def _prune_build_leftovers(client: Any, lab: dict[str, str]) -> None:
    # A failed RUN leaves a stopped intermediate container with forcerm=False only; dangling
    # intermediate images are removed by `docker image prune` with our label.
    with contextlib.suppress(Exception):
        client.images.prune(
            filters={"dangling": True, "label": f"{LABEL}.run={lab[f'{LABEL}.run']}"}
        )


def remove_labelled(
    client: Any, *, run: str | None = None, keep_task_images: bool = True
) -> dict[str, int]:
    """Remove containers (and images, by policy) labelled by litecoder. `litecoder clean`."""
    flt = [f"{LABEL}.run={run}"] if run else [LABEL]
    removed = {"containers": 0, "images": 0}
    for c in client.containers.list(all=True, filters={"label": flt}):
        with contextlib.suppress(Exception):
            c.remove(force=True)
            removed["containers"] += 1
    for img in client.images.list(filters={"label": flt}):
        kind = img.labels.get(f"{LABEL}.kind")
        if kind == "base-image" or (keep_task_images and kind == "task-image"):
            continue
        with contextlib.suppress(Exception):
            client.images.remove(img.id, force=True)
            removed["images"] += 1
    # Dangling images (a task image rebuilt under the same tag) are never useful.
    with contextlib.suppress(Exception):
        pruned = client.images.prune(filters={"dangling": True, "label": LABEL})
        removed["images"] += len(pruned.get("ImagesDeleted") or [])
    return removed


def remove_compose_projects(client: Any, prefixes: list[str]) -> int:
    """Remove the containers and networks of Docker Compose projects whose name starts with
    one of `prefixes`: what a Harbor trial leaves behind when Harbor is killed mid-trial."""
    if not prefixes:
        return 0
    key = "com.docker.compose.project"
    removed = 0
    for c in client.containers.list(all=True, filters={"label": key}):
        if c.labels.get(key, "").startswith(tuple(prefixes)):
            with contextlib.suppress(Exception):
                c.remove(force=True)
                removed += 1
    for n in client.networks.list(filters={"label": key}):
        if n.attrs.get("Labels", {}).get(key, "").startswith(tuple(prefixes)):
            with contextlib.suppress(Exception):
                n.remove()
    return removed


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def image_labels(client: Any, name: str) -> dict[str, str] | None:
    """Labels of a local image, or None if it is not there."""
    from docker.errors import ImageNotFound

    try:
        return client.images.get(name).labels or {}
    except ImageNotFound:
        return None


def import_rootfs(client: Any, tarball: Path, name: str, lab: dict[str, str]) -> str:
    """`docker import` of a root file system tarball as image `name` (repo:tag)."""
    repo, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "latest")
    changes = ['CMD ["bash"]'] + [f"LABEL {k}={json_quote(v)}" for k, v in lab.items()]
    client.api.import_image_from_file(str(tarball), repository=repo, tag=tag, changes=changes)
    return client.images.get(name).id


def pull_image(client: Any, name: str) -> str:
    try:
        return client.images.pull(name).id
    except Exception as e:
        raise SandboxError(f"cannot pull {name}: {_one_line(e)}") from None


def json_quote(value: str) -> str:
    import json

    return json.dumps(value)

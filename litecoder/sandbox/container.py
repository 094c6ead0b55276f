"""`Sandbox`: one hardened container that runs one command at a time.

The container runs unprivileged: capabilities dropped to `CAPS`, `no-new-privileges`, CPU and
memory limits (swap = none), a pids limit, a hard disk quota, no network unless allowed, no
host mounts, no Docker socket. Each command runs under `timeout` inside the container and a
host-side deadline outside it; its output is streamed and only a head and a tail are kept.
When a command ends, nothing it started keeps running: the host lists the container's
processes and restarts the container (its file system stays) if any are left. Whether a
command timed out, ran out of memory, hit the process limit or filled the disk is decided
from the host (elapsed time, cgroup counters, the process table), never from the exit code
or the output alone.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import tarfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from litecoder.sandbox.cgroups import reader_for
from litecoder.sandbox.engine import (
    CAPS,
    REGISTRY,
    SandboxError,
    docker_client,
    one_line,
    require_disk_quota,
    storage_size,
)

DISK_FULL_MARKERS = ("Disk quota exceeded", "No space left on device")


@dataclass(frozen=True)
class ContainerLimits:
    cpus: float = 1.0
    memory_mb: int = 1024
    pids: int = 256
    network: bool = False
    command_timeout_s: float = 60.0
    output_chars: int = 8000
    # Writable disk space (a hard quota on top of the image); None: no cap.
    disk_mb: int | None = 2048
    capabilities: tuple[str, ...] = tuple(CAPS)
    log_max_mb: int = 10  # the engine's log of the container's own output


def hardened(
    *,
    capabilities: tuple[str, ...] | list[str],
    pids: int,
    memory_mb: int,
    cpus: float,
    log_max_mb: int,
    storage_size: str | None = None,
) -> dict[str, Any]:
    """The docker SDK arguments every container litecoder starts gets: unprivileged (only the
    given capabilities, no-new-privileges), docker-init as PID 1, a pids limit, memory
    without swap, CPUs, an optional hard disk quota, and a size cap on the engine's log of
    its output (which lives outside the disk quota)."""
    out: dict[str, Any] = {
        "privileged": False,
        "cap_drop": ["ALL"],
        "cap_add": list(capabilities),
        "security_opt": ["no-new-privileges"],
        "init": True,
        "pids_limit": pids,
        "mem_limit": f"{memory_mb}m",
        "memswap_limit": f"{memory_mb}m",
        "nano_cpus": int(cpus * 1e9),
        "log_config": {
            "type": "json-file",
            "config": {"max-size": f"{max(1, log_max_mb)}m", "max-file": "1"},
        },
    }
    if storage_size:
        out["storage_opt"] = {"size": storage_size}
    return out


def exec_output(api: Any, exec_id: str) -> Iterator[bytes]:
    """Start an exec and yield its output (stdout and stderr, as it comes).

    docker-py's `exec_start` reads the upgraded connection from the raw socket, under the
    buffered reader the HTTP response was parsed with: output that arrived together with the
    response headers sits in that buffer and is lost (docker/docker-py#2042). On a loaded engine
    a command that ends at once then came back empty. This reads the buffered reader, frame by
    frame (8-byte header: stream, 0, 0, 0, big-endian size)."""
    res = api._post_json(
        api._url("/exec/{0}/start", exec_id),
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        data={"Tty": False, "Detach": False},
        stream=True,
    )
    try:
        # No read timeout on the stream (a command may print nothing for a long time); the
        # command's own timeout and the host-side deadline in `exec` end it.
        api._disable_socket_timeout(api._get_raw_response_socket(res))
        fp = res.raw._fp.fp
        while True:
            header = fp.read(8)
            if len(header) < 8:
                return
            size = int.from_bytes(header[4:8], "big")
            data = fp.read(size) if size else b""
            if data:
                yield data
            if len(data) < size:
                return
    finally:
        res.close()


@dataclass
class ExecResult:
    exit_code: int
    output: str
    duration_s: float
    truncated: bool = False
    output_bytes: int = 0
    timed_out: bool = False
    oom_killed: bool = False
    pids_exhausted: bool = False
    disk_full: bool = False
    # Processes the command left running; they were stopped (the container was restarted).
    stray_processes: int = 0

    @property
    def violation(self) -> str | None:
        """Why the sandbox had to stop this command, if it did."""
        if self.pids_exhausted:
            return "process limit reached (fork bomb?)"
        if self.oom_killed:
            return "killed: out of memory"
        if self.disk_full:
            return "disk limit reached"
        if self.timed_out:
            return f"command timed out after {self.duration_s:.0f}s"
        return None

    def notes(self) -> list[str]:
        """What the sandbox did to the command, for the agent's observation."""
        out = []
        if self.truncated:
            out.append(f"output was {self.output_bytes} bytes; only its head and tail are shown")
        if self.stray_processes:
            out.append(
                f"{self.stray_processes} process(es) the command left running were stopped "
                "(commands may not leave processes behind)"
            )
        return out


class BoundedOutput:
    """A stream's first and last `limit/2` bytes; the middle is counted, not kept."""

    def __init__(self, limit: int):
        self.half = max(1, limit // 2)
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_len = 0
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail.append(chunk)
        self.tail_len += len(chunk)
        while self.tail and self.tail_len - len(self.tail[0]) >= self.half:
            self.tail_len -= len(self.tail.popleft())

    def text(self) -> tuple[str, bool]:
        tail = b"".join(self.tail)[-self.half :]
        cut = self.total - len(self.head) - len(tail)
        if cut <= 0:
            return (bytes(self.head) + tail).decode("utf-8", "replace"), False
        head = bytes(self.head).decode("utf-8", "replace")
        return f"{head}\n[... {cut} bytes cut ...]\n{tail.decode('utf-8', 'replace')}", True


@dataclass
class Sandbox:
    """One long-lived container (`sleep infinity` under docker-init) to run commands in."""

    image: str
    limits: ContainerLimits
    labels: dict[str, str]
    client: Any = None
    workdir: str = "/"
    container: Any = field(default=None, init=False)
    # Host pids of docker-init and its `sleep infinity`: every other process is a command's.
    _baseline: set[str] = field(default_factory=set, init=False)
    restarts: int = field(default=0, init=False)

    def start(self) -> Sandbox:
        self.client = self.client or docker_client()
        lim = self.limits
        size = None
        if lim.disk_mb is not None:
            require_disk_quota(self.client, self.image)
            size = storage_size(self.client, self.image, lim.disk_mb)
        try:
            self.container = self.client.containers.run(
                self.image,
                ["sleep", "infinity"],
                detach=True,
                labels=self.labels,
                network_mode="bridge" if lim.network else "none",
                working_dir=self.workdir,
                **hardened(
                    capabilities=lim.capabilities,
                    pids=lim.pids,
                    memory_mb=lim.memory_mb,
                    cpus=lim.cpus,
                    log_max_mb=lim.log_max_mb,
                    storage_size=size,
                ),
            )
        except Exception as e:
            raise SandboxError(
                f"cannot start a container from {self.image}: {one_line(e)}"
            ) from None
        REGISTRY.add(self.container)
        self._baseline = self._pids()
        return self

    def close(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.remove(force=True)
            REGISTRY.discard(self.container.id)
            self.container = None

    def stop(self) -> None:
        """Kill every process (the file system stays, for diff and archives)."""
        with contextlib.suppress(Exception):
            self.container.kill()
        with contextlib.suppress(Exception):
            self.container.wait(timeout=30)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes --

    def _pids(self) -> set[str]:
        try:
            return {p[1] for p in self.container.top()["Processes"] or []}
        except Exception:
            return set()

    def _restart(self) -> None:
        """Stop every process and start the container again (its file system is kept)."""
        try:
            self.container.restart(timeout=0)
        except Exception as e:
            raise SandboxError(f"could not restart the sandbox: {one_line(e)}") from None
        self.restarts += 1
        self._baseline = self._pids()

    def _oom_kills(self) -> int:
        """OOM kills in this container so far, read where its engine runs it."""
        return reader_for(self.client).oom_kills(self.container.id) or 0

    def _pids_max_events(self) -> int:
        """How often the process limit stopped a fork in this container so far."""
        return reader_for(self.client).pids_limit_hits(self.container.id) or 0

    # -- commands --

    def exec(
        self, command: str, timeout_s: float | None = None, workdir: str | None = None
    ) -> ExecResult:
        """Run `bash -c command` to its end; see the module docstring for what is enforced."""
        timeout_s = timeout_s or self.limits.command_timeout_s
        wrapped = ["timeout", "-k", "5", str(int(max(1, timeout_s))), "bash", "-c", command]
        oom_before, pids_before = self._oom_kills(), self._pids_max_events()
        out = BoundedOutput(self.limits.output_chars)
        api = self.client.api
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                ex = api.exec_create(self.container.id, wrapped, workdir=workdir or self.workdir)
                for chunk in exec_output(api, ex["Id"]):
                    out.feed(chunk)
                result["code"] = api.exec_inspect(ex["Id"])["ExitCode"]
            except Exception as e:
                result["error"] = e

        start = time.monotonic()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(timeout_s + 30)  # host-side deadline in case the in-container one fails
        host_deadline = t.is_alive()
        if host_deadline:
            self._restart()  # ends the exec with everything it started
            t.join(30)
        duration = time.monotonic() - start
        if "error" in result and not host_deadline:
            if self._dead_or_full():
                result = {"code": 137}
            else:
                raise SandboxError(f"exec failed: {one_line(result['error'])}")
        code = result.get("code")
        text, truncated = out.text()
        res = ExecResult(
            code if code is not None else 137, text, duration, truncated, output_bytes=out.total
        )
        # A timeout is the sandbox's when the time was up, not whenever the exit code is 124.
        res.timed_out = host_deadline or (
            res.exit_code in (124, 137) and duration >= timeout_s - 0.5
        )
        res.oom_killed = self._oom_kills() > oom_before and not res.timed_out
        strays = self._pids() - self._baseline
        res.pids_exhausted = self._pids_max_events() > pids_before or (
            len(strays) >= self.limits.pids - 4
        )
        # With a quota the engine says whether the layer reached it, whatever the command
        # printed (`dd ... 2>&1 | tail -2` hides the error); without one, the output is all
        # there is.
        res.disk_full = (
            self._disk_at_limit()
            if self.limits.disk_mb is not None
            else any(m in text for m in DISK_FULL_MARKERS)
        )
        self.container.reload()
        if strays or self.container.status != "running":
            res.stray_processes = len(strays)
            self._restart()
        return res

    def _disk_at_limit(self) -> bool:
        """Whether the engine reports the writable layer at its quota."""
        assert self.limits.disk_mb is not None
        with contextlib.suppress(Exception):
            rows = self.client.api.containers(
                all=True, size=True, filters={"id": self.container.id}
            )
            size = int(rows[0].get("SizeRw") or 0)
            # The engine reports -1 when it cannot measure a layer that is at its quota.
            return size < 0 or size // 2**20 >= self.limits.disk_mb - 64
        return False

    def _dead_or_full(self) -> bool:
        """Could a failed exec be the command's doing (sandbox stopped, process table full)?"""
        with contextlib.suppress(Exception):
            self.container.reload()
            if self.container.status != "running":
                return True
            return len(self._pids() - self._baseline) >= self.limits.pids - 4
        return False

    # -- files --

    def write_file(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        data = content.encode() if isinstance(content, str) else content
        p = PurePosixPath(path)
        if not p.is_absolute():
            p = PurePosixPath(self.workdir) / p
        self.exec(f"mkdir -p {shlex.quote(str(p.parent))}")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(p.name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        if not self.container.put_archive(str(p.parent), buf.getvalue()):
            raise SandboxError(f"could not write {p}")

    def put_dir(self, src: Path, dest: str) -> None:
        """Copy a host directory's contents to `dest` in the container (links as links)."""
        self.exec(f"mkdir -p {shlex.quote(dest)}")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for child in sorted(src.iterdir()):
                tar.add(child, arcname=child.name)
        self.container.put_archive(dest, buf.getvalue())

    def archive_chunks(self, path: str) -> Iterable[bytes]:
        """A tar stream of `path` in the container (works on a stopped container)."""
        stream: Iterable[bytes] = self.container.get_archive(path)[0]
        return stream

    def read_file(self, path: str, max_bytes: int = 1 << 20) -> bytes | None:
        """A regular file's content, read through the engine's archive API (no command runs
        in the container, so nothing there can shape what comes back but the file itself).
        None when `path` is missing, not a regular file (a link is not followed), or larger
        than `max_bytes`."""
        from docker.errors import NotFound

        try:
            stream, stat = self.container.get_archive(path)
        except NotFound:
            return None
        if int(stat.get("size", 0)) > max_bytes:
            return None
        buf = bytearray()
        for chunk in stream:  # the tar of one small file: its size was checked above
            buf += chunk
            if len(buf) > max_bytes + (1 << 16):
                return None
        with tarfile.open(fileobj=io.BytesIO(bytes(buf))) as tar:
            member = tar.next()
            if member is None or not member.isfile() or member.size > max_bytes:
                return None
            f = tar.extractfile(member)
            return f.read(max_bytes) if f else None

    def diff(self) -> list[dict[str, Any]]:
        return self.container.diff() or []

"""A container's cgroup counters (process-limit hits, OOM kills), read where its engine runs it.

On this host's engine the counters are files in this host's cgroup tree. A container of another
engine (`DOCKER_HOST`: another machine, or a second daemon with its own cgroup parent) is not
in that tree: its counters are read through that engine by a small reader container with the
engine host's cgroup tree mounted read-only. Never by running a program inside the container
being measured, which could print whatever it likes.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import weakref
from pathlib import Path
from typing import Any

from litecoder.sandbox.engine import REGISTRY, labels, one_line

log = logging.getLogger(__name__)

# The reader's image: litecoder's base image, which every engine litecoder builds on has
# (`set_reader_image`: the configured one). It needs sh, find and cat.
_reader_image = "litecoder-base:bookworm"
CGROUP_MOUNT = "/host-cgroup"


def set_reader_image(name: str) -> None:
    global _reader_image
    _reader_image = name


def cgroup_file(container_id: str, controller: str, name: str) -> Path | None:
    """The host path of a container's cgroup file (v1 or v2, cgroupfs or systemd driver)."""
    root = Path("/sys/fs/cgroup")
    for p in (
        root / controller / "docker" / container_id / name,
        root / controller / "system.slice" / f"docker-{container_id}.scope" / name,
        root / "docker" / container_id / name,
        root / "system.slice" / f"docker-{container_id}.scope" / name,
    ):
        if p.is_file():
            return p
    return None


def parse_counter(text: str, key: str) -> int | None:
    """`key N` from a cgroup key/value file (pids.events, memory.events, memory.oom_control)."""
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            with contextlib.suppress(ValueError):
                return int(v)
    return None


def read_counter(path: Path | None, key: str) -> int | None:
    if path is None:
        return None
    try:
        return parse_counter(path.read_text(), key)
    except OSError:
        return None


# Finds the container's cgroup dir under the engine host's tree (any parent, either driver)
# and prints the file. $1: container id, $2: file name, $3: controller (v1).
_FIND = (
    'for base in "$M/$3" "$M"; do [ -d "$base" ] || continue; '
    'd=$(find "$base" -maxdepth 6 -type d \\( -name "$1" -o -name "docker-$1.scope" \\) '
    "2>/dev/null | head -n 1); "
    'if [ -n "$d" ] && [ -f "$d/$2" ]; then cat "$d/$2"; exit 0; fi; done; exit 1'
)


class CgroupReader:
    """Counters of one engine's containers (see the module doc). Thread-safe; the reader
    container is started on first need and removed by `close` (or with every sandbox
    container this process owns, on exit or a signal)."""

    def __init__(self, client: Any):
        self.client = client
        self._reader: Any = None
        self._failed = False
        self._lock = threading.Lock()

    def read(self, container_id: str, controller: str, name: str, key: str) -> int | None:
        local = read_counter(cgroup_file(container_id, controller, name), key)
        if local is not None:
            return local
        text = self._through_engine(container_id, controller, name)
        return parse_counter(text, key) if text is not None else None

    def oom_kills(self, container_id: str) -> int | None:
        for name in ("memory.oom_control", "memory.events"):  # cgroup v1, v2
            v = self.read(container_id, "memory", name, "oom_kill")
            if v is not None:
                return v
        return None

    def pids_limit_hits(self, container_id: str) -> int | None:
        return self.read(container_id, "pids", "pids.events", "max")

    def _through_engine(self, container_id: str, controller: str, name: str) -> str | None:
        reader = self._start()
        if reader is None:
            return None
        try:
            code, out = reader.exec_run(
                ["sh", "-c", _FIND, "find-cgroup", container_id, name, controller],
                environment={"M": CGROUP_MOUNT},
                demux=False,
            )
        except Exception as e:  # e.g. removed with this stage's containers: start another
            log.debug("cgroup reader: %s", one_line(e))
            with self._lock:
                if self._reader is reader:
                    self._reader = None
            return None
        return out.decode(errors="replace") if code == 0 and out else None

    def _start(self) -> Any:
        with self._lock:
            if self._reader is not None or self._failed:
                return self._reader
            try:
                self._reader = self.client.containers.run(
                    _reader_image,
                    ["sleep", "infinity"],
                    detach=True,
                    volumes={"/sys/fs/cgroup": {"bind": CGROUP_MOUNT, "mode": "ro"}},
                    network_mode="none",
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    read_only=True,
                    init=True,
                    mem_limit="64m",
                    pids_limit=32,
                    labels=labels("cgroup-reader", None, "cgroup-reader", owner=True),
                )
            except Exception as e:
                # Counters then stay unknown (recorded as 0): say so once, go on.
                self._failed = True
                log.warning(
                    "cannot read cgroup counters through the engine (%s): limit hits and "
                    "OOM kills of its containers are not recorded",
                    one_line(e),
                )
                return None
            REGISTRY.add(self._reader)
            return self._reader

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    self._reader.remove(force=True)
                REGISTRY.discard(self._reader.id)
                self._reader = None


_readers: dict[str, CgroupReader] = {}  # engine ID -> its reader
_engines: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()  # client -> ID
_readers_lock = threading.Lock()


def reader_for(client: Any) -> CgroupReader:
    """One reader per engine (by the engine's own ID) in this process."""
    with _readers_lock:
        engine = _engines.get(client)
        if engine is None:
            try:
                engine = str(client.info().get("ID") or id(client))
            except Exception:
                engine = str(id(client))
            _engines[client] = engine
        if engine not in _readers:
            _readers[engine] = CgroupReader(client)
        return _readers[engine]


@atexit.register
def close_readers() -> None:
    with _readers_lock:
        readers = list(_readers.values())
    for r in readers:
        r.close()

"""The LLM response cache, safe for many processes on many machines sharing a file system.

Each writer (one process) appends to a file of its own, `<host>-<pid>-<random>.jsonl`, one
response per line; nobody ever writes another's file, so there is no lock to take (locks are
what break on NFS) and nothing to corrupt. Readers merge all the files: an index of key ->
(file, offset) is built at open and extended with what other writers added since, whenever a
key is missing. A line is used only once it is complete (a writer killed mid-line leaves a
partial last line, which is skipped). Each response is flushed to the file when it arrives,
so a killed stage resumes without repeating a finished call.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any


class ResponseCache:
    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: dict[str, tuple[Path, int]] = {}
        self._scanned: dict[Path, int] = {}  # file -> bytes indexed
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._own = self.dir / name
        self._out: IO[bytes] | None = None
        self._scanned_at = 0.0
        self._scan()

    def _scan(self, at_most_every_s: float = 0.0) -> None:
        """Index what writers added since the last scan (complete lines only)."""
        now = time.monotonic()
        if now - self._scanned_at < at_most_every_s:
            return
        self._scanned_at = now
        for path in sorted(self.dir.glob("*.jsonl")):
            done = self._scanned.get(path, 0)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size <= done:
                continue
            with path.open("rb") as f:
                f.seek(done)
                offset = done
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # a line still being written (or cut by a kill)
                    try:
                        key = json.loads(line)["key"]
                    except (ValueError, KeyError, TypeError):
                        key = None  # a damaged line: skipped, never fatal
                    if key is not None:
                        self._index.setdefault(key, (path, offset))
                    offset += len(line)
            self._scanned[path] = offset

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            where = self._index.get(key)
            if where is None:
                # What other writers added lately (at most once a second: a miss is common).
                self._scan(at_most_every_s=1.0)
                where = self._index.get(key)
            if where is None:
                return None
            path, offset = where
        with path.open("rb") as f:
            f.seek(offset)
            entry: dict[str, Any] = json.loads(f.readline())
        response: dict[str, Any] = entry["response"]
        return response

    def put(self, key: str, kind: str, model: str, response: dict[str, Any]) -> None:
        line = (
            json.dumps(
                {"key": key, "kind": kind, "model": model, "response": response},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            + "\n"
        ).encode()
        with self._lock:
            if key in self._index:
                return
            if self._out is None:
                self._out = self._own.open("ab")
            offset = self._scanned.get(self._own, 0)
            self._out.write(line)
            self._out.flush()  # in the kernel: survives a killed process
            self._index[key] = (self._own, offset)
            self._scanned[self._own] = offset + len(line)

    def keys(self) -> set[str]:
        with self._lock:
            self._scan()
            return set(self._index)

    def close(self) -> None:
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None


def open_cache(cache_dir: Path | None) -> ResponseCache | None:
    return ResponseCache(cache_dir / "responses") if cache_dir is not None else None

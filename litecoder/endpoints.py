"""Where each model role's requests go: its teacher's base_url, a model litecoder serves itself
on loopback (`teacher.serve`), or the offline stand-in. Servers are started once per stage
run, only for the roles the stage uses, and shared by roles that name the same model."""

from __future__ import annotations

import contextlib
import socket
import zlib
from pathlib import Path
from typing import Any

from litecoder.config import Config


class Endpoints:
    """Base URL (and the model name to request) per model role.

    The stand-in prefers a port derived from the project directory, so that Harbor jobs,
    which record their endpoint, can be resumed by a later run; served teachers likewise."""

    def __init__(self, cfg: Config, root: Path | None = None):
        self.cfg = cfg
        self.root = root
        self.stand_in: Any = None
        self._served: dict[str, tuple[str, str]] = {}  # serve settings -> (url, served name)
        self._stack = contextlib.ExitStack()

    def url(self, role: str) -> str:
        t = self.cfg.models[role]
        if t.base_url:
            return t.base_url
        if t.serve:
            return self._serve(role)[0]
        if self.stand_in is None:
            from litecoder.standin import StandIn

            port = 20000 + zlib.crc32(str(self.root).encode()) % 20000 if self.root else 0
            self.stand_in = StandIn(port=port).start()
        return str(self.stand_in.base_url)

    def served_name(self, role: str) -> str | None:
        """The name a server litecoder started answers to (None: the teacher's `model`)."""
        return self._serve(role)[1] if self.cfg.models[role].serve else None

    def _port(self, key: str) -> int:
        """Stable per project and model; a free one when another run holds it."""
        from litecoder.serve import free_port

        port = 20000 + zlib.crc32(f"{self.root}:serve:{key}".encode()) % 20000
        with socket.socket() as probe:
            taken = probe.connect_ex(("127.0.0.1", port)) == 0
        return free_port() if taken or not self.root else port

    def _serve(self, role: str) -> tuple[str, str]:
        s = self.cfg.models[role].serve
        assert s is not None
        key = s.model_dump_json()
        if key not in self._served:
            from litecoder import models
            from litecoder.serve import serve

            root = self.root or Path.cwd()
            path = models.resolve_with(s.model, s.python, root)
            log = root / ".litecoder" / "serve" / f"{role}.log"
            port = self._port(key)
            self._served[key] = self._stack.enter_context(serve(path, s, root, log, port=port))
        return self._served[key]

    def __enter__(self) -> Endpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._stack.close()
        finally:
            if self.stand_in:
                self.stand_in.stop()

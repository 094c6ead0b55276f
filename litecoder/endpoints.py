"""Where each model role's requests go: its teacher's base_url, or the offline stand-in, which
is started (on loopback, once per stage run) only when a teacher config asks for it."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from litecoder.config import Config


class Endpoints:
    """Base URL per model role.

    The stand-in prefers a port derived from the project directory, so that Harbor jobs,
    which record their endpoint, can be resumed by a later run."""

    def __init__(self, cfg: Config, root: Path | None = None):
        self.cfg = cfg
        self.root = root
        self.stand_in: Any = None

    def url(self, role: str) -> str:
        t = self.cfg.models[role]
        if t.base_url:
            return t.base_url
        if self.stand_in is None:
            from litecoder.standin import StandIn

            port = 20000 + zlib.crc32(str(self.root).encode()) % 20000 if self.root else 0
            self.stand_in = StandIn(port=port).start()
        return str(self.stand_in.base_url)

    def __enter__(self) -> Endpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stand_in:
            self.stand_in.stop()

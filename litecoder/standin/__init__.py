"""The offline stand-in teacher: a scripted OpenAI-compatible server (not a model), a test
instrument. The runtime starts it only when a teacher config asks for it (`stand_in: true`
with no base_url), through `litecoder.endpoints`."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class StandIn:
    """A stand-in server process on loopback, started and stopped by litecoder."""

    latency_s: float = 0.0
    fault_rate: float = 0.0
    faults: str | None = None
    slow_s: float | None = None
    seed: int = 0
    api_key_env: str | None = None
    port: int = 0  # preferred port (0: any); falls back to any port if it is taken
    shape: str | None = None  # answer in a real teacher's shape (standin/shapes.yaml)
    base_url: str = ""
    _proc: subprocess.Popen[str] | None = None

    def start(self) -> StandIn:
        try:
            return self._start(self.port)
        except RuntimeError:
            if not self.port:
                raise
            return self._start(0)  # the preferred port is taken

    def _start(self, port: int) -> StandIn:
        cmd = [
            sys.executable,
            "-m",
            "litecoder.standin.server",
            "--port",
            str(port),
            "--latency",
            str(self.latency_s),
            "--fault-rate",
            str(self.fault_rate),
            "--seed",
            str(self.seed),
        ]
        if self.faults:
            cmd += ["--faults", self.faults]
        if self.api_key_env:
            cmd += ["--api-key-env", self.api_key_env]
        if self.slow_s is not None:
            cmd += ["--slow-s", str(self.slow_s)]
        if self.shape:
            cmd += ["--shape", self.shape]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"offline stand-in teacher failed to start: {line!r}")
        self.base_url = line.split()[1]
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

    def stats(self) -> dict[str, Any]:
        return stand_in_stats(self.base_url)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stand_in_stats(base_url: str) -> dict[str, Any]:
    url = base_url.rstrip("/").removesuffix("/v1") + "/_stand_in/stats"
    with urllib.request.urlopen(url, timeout=10) as r:
        stats: dict[str, Any] = json.load(r)
        return stats

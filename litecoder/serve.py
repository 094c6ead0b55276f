"""Model serving: an OpenAI-compatible server for a checkpoint on loopback, started and
stopped by the caller (`transformers serve` on CPU, vLLM on GPU)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from litecoder.config import Serve
from litecoder.io import StageError, tail
from litecoder.procs import die_with_parent, env_python, stop_process

log = logging.getLogger(__name__)
SERVED_NAME = "litecoder-eval"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(
    model: str, s: Serve, root: Path, log_path: Path, port: int | None = None
) -> Iterator[tuple[str, str]]:
    """An OpenAI-compatible server for `model` (a directory or a Hub id) on loopback; yields
    (base URL, model name to request): `transformers serve` answers only to the pinned
    model's own name."""
    port = port or free_port()
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise StageError(f"port {port} on loopback is taken: is an earlier server running?")
    python = env_python(s.python, root)
    if python is None:
        how = (
            "`make setup-vllm` creates .venv-vllm"
            if s.backend == "vllm"
            else "see scripts/setup.sh"
        )
        raise StageError(f"eval.serve.python {s.python!r} does not exist ({how})")
    bindir = python.parent
    if s.backend == "transformers":
        cmd = [
            str(bindir / "transformers"),
            "serve",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
            "--dtype",
            "float32",
        ]
    else:
        cmd = [
            str(bindir / "vllm"),
            "serve",
            model,
            "--served-model-name",
            SERVED_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        if s.max_model_len:
            cmd += ["--max-model-len", str(s.max_model_len)]
    cmd += s.extra_args
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if Path(model).is_dir():  # a local directory needs no hub; a Hub id follows the user's
        env.setdefault("HF_HUB_OFFLINE", "1")  # setting (HF_HUB_OFFLINE, HF_HOME, tokens)
    if s.threads:
        env["OMP_NUM_THREADS"] = str(s.threads)
    with log_path.open("w") as logf:
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + s.startup_timeout_s
        while True:
            if proc.poll() is not None:
                log_tail = tail(log_path.read_text(errors="replace"), 6)
                raise StageError(
                    f"{s.backend} server for {model} exited {proc.returncode}: {log_tail}"
                )
            try:
                # /health exists on both servers; /v1/models of `transformers serve` scans
                # the hub cache and fails offline.
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise StageError(
                        f"{s.backend} server did not come up in {s.startup_timeout_s}s"
                    ) from None
                time.sleep(1)
        log.info("serving %s at %s (%s)", model, base, s.backend)
        yield base, (model if s.backend == "transformers" else SERVED_NAME)
    finally:
        stop_process(proc, 30)

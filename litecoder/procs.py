"""Child processes litecoder starts (Harbor, model servers, training launchers): tied to
litecoder's life, and stopped so that their own children stop too."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any


def die_with_parent() -> None:
    """preexec_fn for child processes: SIGTERM them if litecoder dies (even by SIGKILL), so a
    resumed run never races an orphan on the same job directory."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 60) -> None:
    """SIGTERM, then SIGKILL after `grace_s`. SIGTERM first: launchers (Harbor, torchrun,
    accelerate) stop their own children on it, which run in sessions of their own and would
    outlive a SIGKILL of the launcher."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


SOURCE_ROOT = Path(__file__).resolve().parent.parent


def env_python(path: str, root: Path) -> Path | None:
    """An interpreter path from config: absolute, else under the project root, else under
    litecoder's own checkout (where scripts/setup.sh creates .venv-train), else beside the
    environment this process runs in (a Ray worker may import litecoder from a project copy
    that has no .venv-train)."""
    p = Path(path)
    beside = Path(sys.prefix).parent / p
    candidates = [p] if p.is_absolute() else [root / p, SOURCE_ROOT / p, beside]
    return next((c for c in candidates if c.exists()), None)

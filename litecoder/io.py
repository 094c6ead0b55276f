"""Atomic file output (temp file + rename), JSONL helpers and typed record files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ValidationError


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temp file beside `path`, fsync, rename over it; nothing half-written remains."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_open(path) as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def tail(text: str, n: int = 5) -> str:
    """The last `n` non-blank lines of a tool's output on one line, for an error message."""
    return " | ".join([ln.strip() for ln in text.splitlines() if ln.strip()][-n:])


class StageError(RuntimeError):
    """A stage cannot go on (a tool failed, a server did not start); the message says why."""


class MissingInput(FileNotFoundError):
    """A stage's input file is not there (its upstream stage has not run)."""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise MissingInput(f"{path} does not exist: run the stage that writes it first")
    out = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise MissingInput(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return out


def write_records(path: Path, records: Iterable[BaseModel]) -> int:
    """JSONL of pydantic records, atomically."""
    return write_jsonl(path, (r.model_dump(mode="json") for r in records))


def read_model[M: BaseModel](path: Path, model: type[M], *, producer: str | None = None) -> M:
    """One JSON document as a typed record (errors as in `read_records`)."""
    made_by = (
        f" (written by stage `{producer}`: run `litecoder {producer}` first)" if producer else ""
    )
    if not path.exists():
        raise MissingInput(f"{path} does not exist{made_by}")
    try:
        return model.model_validate_json(path.read_text())
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise MissingInput(
            f"{path}: not a {model.__name__} ({where}: {first['msg']}){made_by}"
        ) from None


def read_records[M: BaseModel](
    path: Path, model: type[M], *, producer: str | None = None
) -> list[M]:
    """Typed records of a JSONL file; a missing or malformed file is one clear error naming
    the file and the stage that writes it."""
    made_by = (
        f" (written by stage `{producer}`: run `litecoder {producer}` first)" if producer else ""
    )
    if not path.exists():
        raise MissingInput(f"{path} does not exist{made_by}")
    out = []
    for i, raw in enumerate(read_jsonl(path), 1):
        try:
            out.append(model.model_validate(raw))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise MissingInput(
                f"{path}:{i}: not a {model.__name__} record ({where}: {first['msg']}){made_by}"
            ) from None
    return out

"""External SFT datasets merged into litecoder's own (`sft.external`), with provenance.

A source is a local `datasets` directory (`save_to_disk`; a DatasetDict's `split`) or a JSONL
file, in the same chat format as data/sft/train.jsonl (`messages`: role + content), or in
ShareGPT's (`conversations`: from + value), which is converted. Rows that are not a usable chat
(no assistant turn, unknown roles, content that is not text) are dropped and counted by
reason; a source that cannot be read, or yields no usable row, is an error.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from litecoder.config import ExternalSft
from litecoder.io import StageError

ROLES = {"system", "user", "assistant", "tool"}
SHAREGPT = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
            "assistant": "assistant", "tool": "tool", "function": "tool"}  # fmt: skip


def _raw_rows(src: ExternalSft, root: Path) -> list[dict[str, Any]]:
    path = Path(src.path) if Path(src.path).is_absolute() else root / src.path
    if path.is_file():
        rows = []
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise StageError(f"sft.external {src.name}: {path}:{n} is not JSON ({e})") from None
        return rows
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        try:
            ds = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as e:
            raise StageError(
                f"sft.external {src.name}: {path} is not a saved dataset ({e})"
            ) from None
        if isinstance(ds, DatasetDict):
            if src.split not in ds:
                raise StageError(
                    f"sft.external {src.name}: no split {src.split!r} (has {sorted(ds)})"
                )
            ds = ds[src.split]
        return [dict(r) for r in ds]
    raise StageError(f"sft.external {src.name}: {path} does not exist")


def _chat(row: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, str]:
    """The row's messages in litecoder's form, or None and why not."""
    if isinstance(row.get("messages"), list):
        msgs = []
        for m in row["messages"]:
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                return None, "unknown role"
            content = m.get("content")
            if content is not None and not isinstance(content, str):
                return None, "content is not text"
            msgs.append({**m, "content": content or ""})
    elif isinstance(row.get("conversations"), list):
        msgs = []
        for m in row["conversations"]:
            role = SHAREGPT.get(str(m.get("from", ""))) if isinstance(m, dict) else None
            if role is None or not isinstance(m.get("value"), str):
                return None, "unknown role"
            msgs.append({"role": role, "content": m["value"]})
    else:
        return None, "no messages"
    if not any(m["role"] == "assistant" and m["content"] for m in msgs):
        return None, "no assistant turn"
    return msgs, ""


def load(src: ExternalSft, root: Path) -> tuple[list[dict[str, Any]], Counter[str]]:
    """(usable rows with provenance, dropped rows by reason) of one source."""
    rows: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for i, row in enumerate(_raw_rows(src, root)):
        if src.max_rows is not None and len(rows) >= src.max_rows:
            break
        msgs, why = _chat(row) if isinstance(row, dict) else (None, "not an object")
        if msgs is None:
            dropped[why] += 1
            continue
        rows.append(
            {
                "messages": msgs,
                **({"tools": row["tools"]} if row.get("tools") else {}),
                "trial": f"{src.name}/{row.get('trial') or row.get('id') or i}",
                "task_id": str(row.get("task_id") or row.get("task") or ""),
                "domain": str(row.get("domain") or f"external/{src.name}"),
                "scaffold": str(row.get("scaffold") or src.name),
                "source": src.name,
            }
        )
    if not rows:
        raise StageError(
            f"sft.external {src.name}: no usable chat rows ({dict(dropped) or 'empty'})"
        )
    return rows, dropped

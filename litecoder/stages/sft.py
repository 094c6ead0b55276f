"""Stage `sft`: kept trajectories -> the SFT dataset.

data/sft/train.jsonl holds chat records ({"messages": [{"role", "content", ...}], "tools"?})
in the form Axolotl's `type: chat_template` reads, data/sft/hf/ the same as a `datasets`
dataset (`load_from_disk`), data/sft/world_model.jsonl state-prediction records, and
data/sft/README.md the dataset card. Token counts use the target tokenizer and its chat
template (a small one is trained on the data when none is configured); records longer than
`max_seq_len` are split at turn boundaries or dropped. Formats are a registry
(`litecoder.trajectory.formats`).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from litecoder import models
from litecoder.config import Config
from litecoder.context import StageContext
from litecoder.decontam import BenchmarkIndex
from litecoder.io import StageError, write_jsonl, write_records, write_text
from litecoder.records import SftRow, TrajectoryRecord
from litecoder.tracking import StageRun
from litecoder.trajectory import Trajectory, render, template_check
from litecoder.trajectory.external import load as load_external

CHATML_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if loop.first and tools -%}"
    "<|im_start|>system\n{{ m.content if m.role == 'system' else '' }}\n\n# Tools\n"
    "{{ tools | tojson }}<|im_end|>\n"
    "{%- if m.role != 'system' -%}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{%- endif -%}"
    "{%- else -%}"
    "<|im_start|>{{ m.role }}\n{{ m.content if m.content else '' }}"
    "{%- for c in (m.tool_calls or []) -%}"
    '\n<tool_call>\n{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments }}}'
    "\n</tool_call>"
    "{%- endfor -%}<|im_end|>\n"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WORLD_MODEL_SYSTEM = (
    "You simulate a Linux terminal. Given a task, the session so far and the next keystrokes, "
    "answer with exactly what the terminal shows next."
)


def pick_format(trial: str, weights: dict[str, float]) -> str:
    """Deterministic weighted choice of a format for a trajectory."""
    items = [(f, w) for f, w in sorted(weights.items()) if w > 0]
    total = sum(w for _, w in items)
    x = int(hashlib.sha256(trial.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF * total
    for f, w in items:
        if x < w:
            return f
        x -= w
    return items[-1][0]


def build_tokenizer(texts: list[str], vocab_size: int, out: Path) -> Any:
    """A byte-level BPE tokenizer trained on the data, with a ChatML chat template (offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=SPECIAL,
        model_max_length=131072,
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out)
    return fast


def load_tokenizer(cfg: Config, texts: list[str], out: Path, root: Path) -> tuple[Any, str]:
    t = cfg.sft.tokenizer
    if t.path:
        tok = models.tokenizer(t.path, cfg.train.python, root)
        if not tok.chat_template:
            raise ValueError(f"sft.tokenizer.path {t.path!r} has no chat template")
        return tok, t.path
    return build_tokenizer(texts, t.build_vocab_size, out), "trained on this data (tokenizer/)"


def n_tokens(tok: Any, record: dict[str, Any]) -> int:
    ids = tok.apply_chat_template(
        record["messages"], tools=record.get("tools"), tokenize=True, return_dict=False
    )
    if hasattr(ids, "keys"):  # a BatchEncoding, whatever return_dict says
        ids = ids["input_ids"]
    return len(ids)


def split_record(record: dict[str, Any], tok: Any, max_len: int) -> list[dict[str, Any]]:
    """Split at turn boundaries: every piece keeps the task prompt, carries the last screen of
    the piece before it, and ends with an assistant turn."""
    msgs = record["messages"]
    first_asst = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    prefix, rest = msgs[:first_asst], msgs[first_asst:]
    groups: list[list[dict[str, Any]]] = []
    for m in rest:
        if m["role"] == "assistant":
            groups.append([m])
        else:
            groups[-1].append(m)
    pieces: list[dict[str, Any]] = []
    i = 0
    carry = ""
    while i < len(groups):
        head = [dict(m) for m in prefix]
        if carry:
            head[-1]["content"] = f"{head[-1]['content']}\n\n(continued) Terminal so far:\n{carry}"
        body: list[dict[str, Any]] = []
        j = i
        while j < len(groups):
            trial = {**record, "messages": head + body + groups[j]}
            if n_tokens(tok, _trim(trial)) > max_len:
                break
            body += groups[j]
            j += 1
        if j == i:  # one turn alone is too long
            return []
        piece = _trim({**record, "messages": head + body})
        pieces.append(piece)
        carry = str(groups[j - 1][-1].get("content") or "")[-2000:] if j < len(groups) else ""
        i = j
    return pieces


def _trim(record: dict[str, Any]) -> dict[str, Any]:
    """A training record ends with the assistant's turn."""
    msgs = list(record["messages"])
    while msgs and msgs[-1]["role"] != "assistant":
        msgs.pop()
    return {**record, "messages": msgs}


def world_model_records(traj: Trajectory, max_chars: int = 12000) -> list[dict[str, Any]]:
    out = []
    history = f"$ (session start)\n{traj.initial_screen.strip()}\n"
    for t in traj.turns:
        if t.parse_error or not t.commands:
            continue
        keys = "".join(c["keystrokes"] for c in t.commands)
        user = (
            f"Task:\n{traj.instruction}\n\nSession so far:\n{history[-max_chars:]}\n"
            f"Next keystrokes:\n{keys}"
        )
        out.append(
            {
                "messages": [
                    {"role": "system", "content": WORLD_MODEL_SYSTEM},
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": t.observation},
                ],
                "trial": traj.trial,
                "task_id": traj.task_id,
            }
        )
        history += f"{keys}{t.observation}\n"
    return out


def _stats(xs: list[int]) -> dict[str, float]:
    if not xs:
        return {"count": 0}
    return {
        "count": len(xs),
        "mean": round(statistics.mean(xs), 1),
        "median": statistics.median(xs),
        "max": max(xs),
        "min": min(xs),
    }


def run(ctx: StageContext) -> dict[str, Any]:
    """data/sft/ (train.jsonl, hf/, world_model.jsonl, README.md) from kept trajectories."""
    cfg = ctx.cfg
    track = StageRun("sft", cfg, ctx.paths.workdir)
    kept = ctx.read("trajectories", TrajectoryRecord, "kept")
    out = ctx.paths.sft
    trajs = [(rec, Trajectory.from_dict(rec.trajectory)) for rec in kept if rec.trajectory]

    rendered = []
    for rec, traj in trajs:
        fmt = pick_format(traj.trial, cfg.sft.formats)
        chat = render(
            traj,
            fmt,
            drop_parse_errors=cfg.sft.drop_parse_error_turns,
            reasoning=cfg.sft.reasoning_formats.get(fmt, cfg.sft.reasoning),
        )
        rendered.append((rec, traj, fmt, chat))
    external, external_dropped = [], {}
    index = BenchmarkIndex.load(cfg.dedup.decontam, ctx.root) if cfg.sft.external else None
    decontam: Counter[str] = Counter()  # external rows dropped, per benchmark
    for src in cfg.sft.external:
        got, bad = load_external(src, ctx.root)
        if index is not None:  # rows that repeat a benchmark task's instruction
            clean = []
            for row in got:
                prompt = "\n".join(str(m.get("content") or "") for m in row["messages"]
                                    if m.get("role") in ("system", "user"))  # fmt: skip
                hit = index.match(prompt)
                if hit is None:
                    clean.append(row)
                else:
                    bad["decontam"] += 1
                    decontam[hit.benchmark] += 1
            got = clean
        external += got
        external_dropped[src.name] = dict(bad)
    chats = [c for *_, c in rendered] + external
    texts = [json.dumps(c, ensure_ascii=False) for c in chats] or ["empty"]
    tok, tok_name = load_tokenizer(cfg, texts, out / "tokenizer", ctx.root)

    rows: list[SftRow] = []
    split_n = dropped = 0
    # Own trajectories, rendered; then the external rows, as they are (with their source).
    items: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            chat,
            {"trial": traj.trial, "task_id": traj.task_id, "domain": rec.domain,
             "scaffold": rec.agent_label, "format": fmt},
        )
        for rec, traj, fmt, chat in rendered
    ]  # fmt: skip
    for row in external:
        chat = {k: row[k] for k in ("messages", "tools") if k in row}
        meta = {k: v for k, v in row.items() if k not in ("messages", "tools")}
        items.append((chat, {**meta, "format": "external"}))
    # Every row against the student's own chat template: a format whose actions it does not
    # render stops the stage here, before anything is written or trained; a row with an
    # empty assistant turn would teach answering nothing and is left out.
    missing: dict[str, list[str]] = {}
    empty: Counter[str] = Counter()
    usable = []
    for chat, meta in items:
        if template_check.empty_turns(chat):
            empty[meta["format"]] += 1
            continue
        lost = template_check.missing_actions(tok, chat)
        if lost:
            missing.setdefault(meta["format"], []).append(lost[0])
        usable.append((chat, meta))
    if missing:
        fmt, lost = next(iter(sorted(missing.items())))
        raise StageError(
            f"sft: the student's chat template ({tok_name}) does not render the actions of "
            f"format {fmt} ({len(lost)} rows, e.g. {lost[0][:60]!r} is not in the rendered "
            "text): drop it from sft.formats, or use a tokenizer whose template renders them "
            "(sft.tokenizer.path)"
        )
    items = usable
    for chat, meta in items:
        n = n_tokens(tok, chat)
        pieces = [chat]
        if n > cfg.sft.max_seq_len:
            pieces = (
                split_record(chat, tok, cfg.sft.max_seq_len)
                if cfg.sft.overlength == "split"
                else []
            )
            if pieces:
                split_n += 1
            else:
                dropped += 1
        for k, piece in enumerate(pieces):
            rows.append(
                SftRow(
                    **piece,
                    **meta,
                    part=k,
                    turns=sum(m["role"] == "assistant" for m in piece["messages"]),
                    tokens=n if len(pieces) == 1 else n_tokens(tok, piece),
                    trained_tokens=template_check.trained_tokens(tok, piece),
                )
            )
    write_records(ctx.paths.file("sft", "train"), rows)
    _save_hf([r.model_dump(mode="json") for r in rows], out / "hf")
    wm = [r for _, t in trajs for r in world_model_records(t)] if cfg.sft.world_model else []
    if cfg.sft.world_model:
        write_jsonl(ctx.paths.file("sft", "world_model"), wm)

    by_domain = Counter(r.domain for r in rows)
    turns = [r.turns for r in rows]
    tokens = [r.tokens for r in rows]
    track.metrics.update(
        {
            "trajectories": len(kept),
            "rows": len(rows),
            "split_trajectories": split_n,
            "dropped_overlength": dropped,
            "world_model_rows": len(wm),
            "tokenizer": tok_name,
            "per_domain": dict(by_domain),
            "per_scaffold": dict(Counter(r.scaffold for r in rows)),
            "per_format": dict(Counter(r.format for r in rows)),
            "per_source": dict(Counter(r.source for r in rows)),
            "external_dropped": external_dropped,
            "external_decontam": dict(decontam),
            "turns": _stats(turns),
            "tokens": _stats(tokens),
            # What training sees (loss on assistant turns only), by the student's template.
            "assistant_turns": sum(turns),
            "trained_tokens": sum(r.trained_tokens for r in rows),
            "rows_with_empty_assistant_turn": sum(
                bool(template_check.empty_turns(r.model_dump())) for r in rows
            ),
            "dropped_empty_assistant_turn": dict(empty),
        }
    )
    write_text(ctx.paths.file("sft", "card"), dataset_card(cfg, track.metrics))
    track.table = [
        {
            "trial": r.trial,
            "format": r.format,
            "turns": r.turns,
            "tokens": r.tokens,
            "first_reply": str(r.messages[-1].get("content") or "")[:500],
        }
        for r in rows
    ]
    track.histograms = {"turns": list(map(float, turns)), "tokens": list(map(float, tokens))}
    return track.finish()


def _save_hf(rows: list[dict[str, Any]], path: Path) -> None:
    import shutil

    from datasets import Dataset

    if path.exists():
        shutil.rmtree(path)
    # Nested fields vary by format (tool_calls, tools): keep them as JSON-compatible columns.
    ds = Dataset.from_list(
        [
            {
                **r,
                "tools": json.dumps(r.get("tools")) if r.get("tools") else None,
                "messages": [_flat(m) for m in r["messages"]],
            }
            for r in rows
        ]
    )
    ds.save_to_disk(str(path))


def _flat(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": m["role"],
        "content": m.get("content") or "",
        "tool_calls": json.dumps(m["tool_calls"]) if m.get("tool_calls") else None,
        "tool_call_id": m.get("tool_call_id"),
        "reasoning_content": m.get("reasoning_content"),
    }


def dataset_card(cfg: Config, m: dict[str, Any]) -> str:
    def table(d: dict[str, Any], key: str) -> str:
        lines = [f"| {key} | rows |", "|---|---|"] + [
            f"| {k} | {v} |" for k, v in sorted(d.items())
        ]
        return "\n".join(lines)

    def stat_row(name: str) -> str:
        st = m[name]
        vals = [st.get(k, "-") for k in ("count", "mean", "median", "min", "max")]
        return f"| {name} | " + " | ".join(str(v) for v in vals) + " |"

    conf = yaml.safe_dump(
        {
            "experiment": cfg.experiment.name,
            "sft": cfg.sft.model_dump(),
            "filter": cfg.filter.model_dump(),
            "rollout": cfg.rollout.model_dump(),
            "teacher": cfg.teacher("agent").model_dump(exclude={"api_key_env"}),
        },
        sort_keys=False,
    )
    # Not the experiment's description: editing it must not change the data (and retrain).
    return f"""# litecoder SFT dataset: {cfg.experiment.name}

Terminal-agent trajectories of the teacher `{cfg.teacher("agent").model}` on synthesized tasks,
filtered and rendered as chat records for Axolotl (`type: chat_template`, field `messages`).

- `train.jsonl`: {m["rows"]} rows from {m["trajectories"]} kept trajectories
  ({m["split_trajectories"]} split, {m["dropped_overlength"]} dropped;
  limit {cfg.sft.max_seq_len} tokens)
- `hf/`: the same rows for `datasets.load_from_disk` (nested tool fields as JSON strings)
- `world_model.jsonl`: {m["world_model_rows"]} state-prediction rows ((history + command) -> screen)
- tokenizer for counts: `{m["tokenizer"]}`

## Rows by domain

{table(m["per_domain"], "domain")}

## Rows by source scaffold and rendered format

{table(m["per_scaffold"], "scaffold")}

{table(m["per_format"], "format")}

## Rows by dataset (provenance: this run, or an external dataset in `sft.external`)

{table(m["per_source"], "source")}

## Turns and tokens per row

| | count | mean | median | min | max |
|---|---|---|---|---|---|
{stat_row("turns")}
{stat_row("tokens")}

The funnel from sampled tasks to these rows, per domain, is in the experiment's report
(`reports/{cfg.experiment.name}.md`).

## Config

```yaml
{conf}```
"""

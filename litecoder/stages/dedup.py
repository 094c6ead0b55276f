"""Stage `dedup`: exact and near-duplicate removal over the accepted tasks.

Exact: a hash of the normalised text (case and whitespace folded). Near: MinHash over word
shingles with an LSH index (datasketch); a candidate counts when its estimated Jaccard
similarity reaches the threshold. The first task in sample order is kept; every removed
task names the id it duplicates. Decontamination (litecoder.decontam) then drops tasks that
repeat a configured benchmark's task, naming it as `<benchmark>/<task>`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from datasketch import MinHash, MinHashLSH

from litecoder.config import Dedup
from litecoder.context import StageContext
from litecoder.decontam import BenchmarkIndex
from litecoder.io import write_records
from litecoder.records import DuplicateTask, JudgedTask
from litecoder.tracking import StageRun

_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def minhash(text: str, cfg: Dedup) -> MinHash:
    words = _WORD.findall(text.lower())
    k = cfg.shingle_words
    shingles = {" ".join(words[i : i + k]) for i in range(max(1, len(words) - k + 1))}
    m = MinHash(num_perm=cfg.num_perm, seed=1)
    m.update_batch([s.encode() for s in shingles])
    return m


def dedup(records: list[JudgedTask], cfg: Dedup) -> tuple[list[JudgedTask], list[DuplicateTask]]:
    kept: list[JudgedTask] = []
    removed: list[DuplicateTask] = []
    seen: dict[str, str] = {}
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    hashes: dict[str, MinHash] = {}
    for rec in records:
        text = rec.task or ""
        digest = hashlib.sha256(normalise(text).encode()).hexdigest()
        if cfg.exact and digest in seen:
            removed.append(
                DuplicateTask(
                    **rec.model_dump(), duplicate_of=seen[digest], dedup="exact", similarity=1.0
                )
            )
            continue
        if cfg.near:
            mh = minhash(text, cfg)
            best = max(
                ((c, mh.jaccard(hashes[c])) for c in lsh.query(mh)),
                key=lambda x: (x[1], x[0]),
                default=None,
            )
            if best and best[1] >= cfg.threshold:
                removed.append(
                    DuplicateTask(
                        **rec.model_dump(),
                        duplicate_of=best[0],
                        dedup="near",
                        similarity=round(best[1], 4),
                    )
                )
                continue
            lsh.insert(rec.id, mh)
            hashes[rec.id] = mh
        seen.setdefault(digest, rec.id)
        kept.append(rec)
    return kept, removed


def decontaminate(
    records: list[JudgedTask], index: BenchmarkIndex
) -> tuple[list[JudgedTask], list[DuplicateTask]]:
    """Tasks that repeat a benchmark task are dropped, naming `<benchmark>/<task>`."""
    kept: list[JudgedTask] = []
    removed: list[DuplicateTask] = []
    for rec in records:
        hit = index.match(rec.task or "")
        if hit is None:
            kept.append(rec)
            continue
        removed.append(
            DuplicateTask(
                **rec.model_dump(), duplicate_of=hit.name, dedup="decontam", similarity=hit.score
            )
        )
    return kept, removed


def run(ctx: StageContext) -> dict[str, Any]:
    """data/tasks/accepted.jsonl (+ duplicates.jsonl) from data/tasks/judged.jsonl."""
    track = StageRun("dedup", ctx.cfg, ctx.paths.workdir)
    judged = ctx.read("judged", JudgedTask)
    accepted = [r for r in judged if r.accepted]
    kept, removed = dedup(accepted, ctx.cfg.dedup)
    index = BenchmarkIndex.load(ctx.cfg.dedup.decontam, ctx.root)
    if index is not None:
        kept, contaminated = decontaminate(kept, index)
        removed += contaminated
    write_records(ctx.paths.accepted, kept)
    write_records(ctx.paths.duplicates, removed)
    per_domain: dict[str, dict[str, int]] = {}
    for r in accepted:
        per_domain.setdefault(r.domain, {"in": 0, "kept": 0})["in"] += 1
    for r in kept:
        per_domain[r.domain]["kept"] += 1
    contaminated_all = [r for r in removed if r.dedup == "decontam"]
    track.metrics.update(
        {
            "in": len(accepted),
            "kept": len(kept),
            "exact_duplicates": sum(r.dedup == "exact" for r in removed),
            "near_duplicates": sum(r.dedup == "near" for r in removed),
            "contaminated": len(contaminated_all),
            "contaminated_per_benchmark": {
                b: sum(
                    r.dedup == "decontam" and r.duplicate_of.startswith(f"{b}/") for r in removed
                )
                for b in ctx.cfg.dedup.decontam.benchmarks
            },
            "per_domain": per_domain,
        }
    )
    track.table = [r.model_dump(include={"id", "duplicate_of", "dedup", "task"}) for r in removed]
    return track.finish()

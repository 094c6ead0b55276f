"""Decontamination: synthesized tasks that repeat a benchmark's task are dropped.

Every benchmark named in `dedup.decontam.benchmarks` is a directory of task dirs (Harbor's
`instruction.md`, or the original Terminal-Bench layout's `task.yaml`). A text is
contaminated by a benchmark task when the word n-grams they share (`ngram` words; 13 is what
Tmax and Nemotron-Terminal use) are at least `max_ngram_overlap` of the benchmark task's own
n-grams (containment: a long text that embeds a whole benchmark instruction is caught however
much it adds around it) or of the text's (a text that is a piece of one), or when their
MinHash Jaccard similarity over word shingles reaches `minhash_threshold` (near copies; an
LSH index finds the candidates).

The same index checks every text that comes from elsewhere or may repeat one: sampled tasks
(dedup), refined instructions (envprep), external task sets (rollout) and external SFT rows
(sft); each stage counts what it dropped per benchmark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from datasketch import MinHash, MinHashLSH

from litecoder.config import Decontam

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Match:
    benchmark: str
    task: str
    how: str  # ngram | minhash
    score: float

    @property
    def name(self) -> str:
        return f"{self.benchmark}/{self.task}"


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(max(0, len(words) - n + 1))}


def instruction_of(task_dir: Path) -> str | None:
    if (task_dir / "instruction.md").is_file():
        return (task_dir / "instruction.md").read_text(errors="replace")
    if (task_dir / "task.yaml").is_file():  # the original Terminal-Bench layout
        data = yaml.safe_load((task_dir / "task.yaml").read_text(errors="replace")) or {}
        text = data.get("instruction") if isinstance(data, dict) else None
        return str(text) if text else None
    return None


class BenchmarkIndex:
    def __init__(self, cfg: Decontam):
        self.cfg = cfg
        self.lsh = MinHashLSH(threshold=cfg.minhash_threshold, num_perm=cfg.num_perm)
        self.hashes: dict[str, MinHash] = {}
        self.grams: dict[str, set[tuple[str, ...]]] = {}
        self.by_gram: dict[tuple[str, ...], set[str]] = {}
        self.tasks: dict[str, tuple[str, str]] = {}  # key -> (benchmark, task)

    @classmethod
    def load(cls, cfg: Decontam, root: Path) -> BenchmarkIndex | None:
        """The index of every configured benchmark; None when none is configured."""
        if not cfg.benchmarks:
            return None
        index = cls(cfg)
        for bench, path in cfg.benchmarks.items():
            p = Path(path) if Path(path).is_absolute() else root / path
            dirs = [d for d in sorted(p.rglob("*")) if d.is_dir() and instruction_of(d)]
            if not dirs:
                raise FileNotFoundError(f"dedup.decontam.benchmarks.{bench}: no tasks in {p}")
            for d in dirs:
                text = instruction_of(d)
                assert text is not None
                index.add(bench, d.name, text)
        return index

    def __len__(self) -> int:
        return len(self.tasks)

    def _minhash(self, words: list[str]) -> MinHash:
        k = self.cfg.shingle_words
        shingles = {" ".join(words[i : i + k]) for i in range(max(1, len(words) - k + 1))}
        m = MinHash(num_perm=self.cfg.num_perm, seed=1)
        m.update_batch([s.encode() for s in shingles])
        return m

    def add(self, bench: str, task: str, text: str) -> None:
        key = f"{bench}/{task}"
        words = _words(text)
        self.tasks[key] = (bench, task)
        self.grams[key] = _ngrams(words, self.cfg.ngram)
        for g in self.grams[key]:
            self.by_gram.setdefault(g, set()).add(key)
        m = self._minhash(words)
        self.hashes[key] = m
        self.lsh.insert(key, m)

    def match(self, text: str) -> Match | None:
        """The benchmark task this text repeats most, if any repeats it enough."""
        words = _words(text)
        grams = _ngrams(words, self.cfg.ngram)
        best: Match | None = None
        if grams:
            shared: dict[str, int] = {}
            for g in grams:
                for key in self.by_gram.get(g, ()):
                    shared[key] = shared.get(key, 0) + 1
            for key, n in shared.items():
                # Containment both ways: of the benchmark task in the text, and of the text in it.
                score = n / min(len(grams), len(self.grams[key]) or len(grams))
                if score >= self.cfg.max_ngram_overlap and (best is None or score > best.score):
                    best = Match(*self.tasks[key], "ngram", round(score, 4))
        m = self._minhash(words)
        for key in self.lsh.query(m):
            score = m.jaccard(self.hashes[key])
            if score >= self.cfg.minhash_threshold and (best is None or score > best.score):
                best = Match(*self.tasks[key], "minhash", round(score, 4))
        return best

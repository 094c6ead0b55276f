"""The stand-in's scenarios, read from data: one folder per scenario under `scenarios/`.

    scenarios/<id>/scenario.yaml   domain, how the stand-in plays Terminus-2 on it (solve, fail,
                                   loop), judge scores that differ from defaults.yaml, paraphrased
                                   variants of the task text, scripted envprep turns (faults)
    scenarios/<id>/task.md         the task text (what MAGPIE sampling answers)
    scenarios/<id>/files/...       starting files, at their path in the container
    scenarios/<id>/setup.sh        builds the rest of the starting state
    scenarios/<id>/solve.sh        the reference solution; wrong.sh a plausible wrong one
    scenarios/<id>/test_outputs.py the verifier (pytest)
    scenarios/pools.yaml           which texts MAGPIE requests of each domain get
    scenarios/defaults.yaml        the judge scores a scenario gets by default

Each scenario is a task that really runs offline in a Debian image; rejected ones (vague,
infeasible, unsafe) only have a text and their scores. None of this is a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parent / "scenarios"
# A host path the hostile scenarios point links at (tests watch it stays untouched).
HOST_CANARY = "/tmp/litecoder-host-canary"


@dataclass(frozen=True)
class Scenario:
    id: str
    domain: str
    task: str
    scores: dict[str, tuple[int, str]]
    files: dict[str, str] = field(default_factory=dict)  # absolute path -> content
    setup: str = ""
    solution: str = ""
    wrong_solution: str = ""
    tests: str = ""
    behaviour: str = "solve"
    loop_command: str = ""
    variants: tuple[str, ...] = ()
    envprep: dict[str, list[list[dict[str, str]]]] = field(default_factory=dict)

    @property
    def runnable(self) -> bool:
        return bool(self.solution and self.tests)

    def text(self, variant: int) -> str:
        return self.task if variant == 0 else self.variants[variant - 1]


def _read(p: Path) -> str:
    return p.read_text() if p.exists() else ""


def load(d: Path, defaults: dict[str, tuple[int, str]]) -> Scenario:
    meta: dict[str, Any] = yaml.safe_load((d / "scenario.yaml").read_text())
    scores = dict(defaults)
    scores.update({k: (int(v[0]), str(v[1])) for k, v in (meta.get("scores") or {}).items()})
    files_dir = d / "files"
    files = {
        "/" + str(p.relative_to(files_dir)): p.read_text()
        for p in sorted(files_dir.rglob("*"))
        if p.is_file()
    }
    return Scenario(
        id=meta["id"],
        domain=meta["domain"],
        task=(d / "task.md").read_text().strip(),
        scores=scores,
        files=files,
        setup=_read(d / "setup.sh"),
        solution=_read(d / "solve.sh"),
        wrong_solution=_read(d / "wrong.sh"),
        tests=_read(d / "test_outputs.py"),
        behaviour=meta.get("behaviour", "solve"),
        loop_command=meta.get("loop_command", ""),
        variants=tuple(v.strip() for v in meta.get("variants") or ()),
        envprep=meta.get("envprep") or {},
    )


@cache
def defaults() -> dict[str, tuple[int, str]]:
    raw = yaml.safe_load((ROOT / "defaults.yaml").read_text())["scores"]
    return {k: (int(v[0]), str(v[1])) for k, v in raw.items()}


@cache
def scenarios() -> dict[str, Scenario]:
    return {
        d.name: load(d, defaults())
        for d in sorted(ROOT.iterdir())
        if (d / "scenario.yaml").exists()
    }


@cache
def pools() -> dict[str, list[tuple[Scenario, str]]]:
    """MAGPIE answers per domain (`*`: any domain without a pool)."""
    raw = yaml.safe_load((ROOT / "pools.yaml").read_text())
    s = scenarios()
    return {dom: [(s[sid], s[sid].text(v)) for sid, v in entries] for dom, entries in raw.items()}


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@cache
def _by_text() -> list[tuple[str, Scenario]]:
    out = []
    for s in scenarios().values():
        for text in (s.task, *s.variants):
            out.append((_norm(text), s))
    return sorted(out, key=lambda kv: -len(kv[0]))  # the longest text that matches wins


def find(text: str) -> Scenario | None:
    """The scenario whose task text (or a variant of it) appears in `text`: a scenario is
    recognised by its own data, fed back to it, never by the wording of a prompt."""
    low = _norm(text)
    return next((s for key, s in _by_text() if key in low), None)


def by_id(scenario_id: str) -> Scenario:
    return scenarios()[scenario_id]

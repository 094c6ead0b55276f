"""The pipeline under DVC, Hydra multirun and SIGKILL, counted by the stand-in teacher."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from litecoder.io import read_jsonl
from litecoder.llm import ResponseCache
from litecoder.standin import StandIn
from tests.conftest import REPO, make_project, point_offline_teacher, run


def git_init(project: Path) -> None:
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "hydra.enabled", "True"],
    ):
        run(cmd, project)
    commit(project, "init")


def commit(project: Path, msg: str) -> None:
    run(["git", "add", "-A"], project)
    run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", msg],
        project,
    )


def counts(server: StandIn) -> dict[str, int]:
    return server.stats()["by_endpoint"]


def test_dvc_repro_is_incremental_and_shares_the_cache(tmp_path: Path) -> None:
    with StandIn() as server:
        project = make_project(tmp_path / "p", git=False)
        point_offline_teacher(project, server.base_url)
        git_init(project)

        # 1. first repro (of the first three stages) writes three datasets and their metrics
        run(["dvc", "repro", "dedup"], project)
        for f in ("sampled", "judged", "accepted", "duplicates"):
            assert (project / f"data/tasks/{f}.jsonl").exists()
        for s in ("sample", "judge", "dedup"):
            assert json.loads((project / f"metrics/{s}.json").read_text())["stage"] == s
        first = counts(server)
        assert first == {"completion": 14, "chat": 14}

        # 2. a second repro changes nothing and makes no call
        r = run(["dvc", "repro", "dedup"], project)
        assert "Data and pipelines are up to date" in r.stdout + r.stderr
        assert counts(server) == first

        # 3. changing only a judge threshold re-runs judge and dedup, with no sampling call
        commit(project, "first run")
        before = json.loads((project / "metrics/judge.json").read_text())
        r = run(
            [
                "dvc",
                "exp",
                "run",
                "-S",
                "judge.criteria.clarity.threshold=5",
                "-S",
                "judge.criteria.complexity_balance.threshold=4",
                "dedup",
            ],
            project,
        )
        out = r.stdout + r.stderr
        assert "Running stage 'judge'" in out and "Running stage 'dedup'" in out
        assert "Running stage 'sample'" not in out
        assert counts(server) == first  # judge answers came from the response cache
        after = json.loads((project / "metrics/judge.json").read_text())
        assert after["accepted"] < before["accepted"]
        assert after["llm"]["total"]["requests"] == 0
        assert after["llm"]["total"]["cache_hits"] == 14
        params = yaml.safe_load((project / "params.yaml").read_text())
        assert params["judge"]["criteria"]["clarity"]["threshold"] == 5
        shown = run(["dvc", "exp", "show", "--json"], project).stdout
        assert "judge.criteria.clarity.threshold" in shown or '"threshold": 5' in shown

        # 4. changing a stage's code re-runs that stage, nothing before it; what follows re-runs
        # only if the stage's output changed (here it does not)
        commit(project, "thresholds")
        code = project / "litecoder/stages/judge.py"
        code.write_text(code.read_text() + "\n# a change to the judge stage's code\n")
        r = run(["dvc", "repro", "dedup"], project)
        out = r.stdout + r.stderr
        assert "Running stage 'judge'" in out and "Running stage 'sample'" not in out
        assert "Stage 'dedup' didn't change" in out
        assert counts(server) == first


def test_multirun_two_thresholds_share_the_cache(tmp_path: Path) -> None:
    with StandIn() as server:
        project = make_project(tmp_path / "p", git=False)
        point_offline_teacher(project, server.base_url)
        run(
            [
                "litecoder",
                "run",
                "--until",
                "dedup",
                "-m",
                "judge.criteria.safety.threshold=4,5",
                "judge.criteria.complexity_balance.threshold=3,5",
            ],
            project,
        )
        jobs = sorted(p for p in (project / "multirun/smoke").glob("*/*") if p.is_dir())
        assert len(jobs) == 4
        accepted = {}
        for job in jobs:
            assert (job / "params.yaml").exists() and (job / "metrics/dedup.json").exists()
            accepted[job.name] = len(read_jsonl(job / "data/tasks/accepted.jsonl"))
        assert len(set(accepted.values())) > 1, accepted
        # Four jobs, but each distinct request was paid for once.
        assert counts(server) == {"completion": 14, "chat": 14}
    sweep = jobs[0].parent
    (sweep / "compare.csv").unlink()  # written by the sweep's callback: `compare` makes it anew
    r = run(["litecoder", "compare", str(sweep)], project)
    assert r.returncode == 0 and "member" in r.stdout
    rows = (sweep / "compare.csv").read_text().splitlines()
    assert len(rows) == 1 + len(jobs) and all(any(j.name in r for r in rows) for j in jobs)
    assert "judge.criteria.safety.threshold" in rows[1]


def test_sample_killed_halfway_repeats_no_finished_request(tmp_path: Path) -> None:
    with StandIn(latency_s=0.2) as server:
        project = make_project(tmp_path / "p", git=False)
        point_offline_teacher(project, server.base_url)
        cmd = ["litecoder", "sample", "sampler.n_tasks=40", "models.sample.limits.concurrency=2"]
        proc = subprocess.Popen(
            cmd,
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        cache_dir = project / ".litecoder/cache/responses"
        deadline = time.monotonic() + 600
        finished: set[str] = set()
        while time.monotonic() < deadline and len(finished) < 12:
            time.sleep(0.1)
            if cache_dir.exists():
                finished = ResponseCache(cache_dir).keys()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        finished = ResponseCache(cache_dir).keys()
        assert 12 <= len(finished) < 40
        assert not (project / "data/tasks/sampled.jsonl").exists()  # no half-written output

        run(cmd, project)
        stats = server.stats()
        recs = read_jsonl(project / "data/tasks/sampled.jsonl")
        assert len(recs) == 40 and all(r["outcome"] == "ok" for r in recs)
        by_key = stats["by_key"]
        assert finished <= set(by_key)
        assert all(by_key[k] == 1 for k in finished), "a finished request was sent again"
        # At most the requests in flight at the kill (concurrency 2) were answered twice.
        assert stats["answered"] <= 40 + 2
        metrics = json.loads((project / "metrics/sample.json").read_text())
        assert metrics["llm"]["total"]["cache_hits"] >= len(finished)


def test_dvc_yaml_is_generated_from_the_stage_specs() -> None:
    from litecoder.dvcfile import dvc_yaml, stage_code
    from litecoder.pipeline import DATA, STAGES

    assert (REPO / "dvc.yaml").read_text() == dvc_yaml(), "run `litecoder dvc-yaml`"
    stages = yaml.safe_load(dvc_yaml())["stages"]
    for name, spec in STAGES.items():
        entry = stages[name]
        assert f"litecoder/stages/{name}.py" in entry["deps"]  # its own code
        assert all((REPO / c).exists() for c in stage_code(spec))
        assert entry["outs"] == [DATA[w].path for w in spec.writes]
    # Derived from the imports: what the issue found missing is there.
    assert "litecoder/magpie.py" in stages["sample"]["deps"]
    assert "litecoder/gateway.py" in stages["rollout"]["deps"]
    assert any(d.startswith("litecoder/harbor") for d in stages["filter"]["deps"])
    assert any(d.startswith("litecoder/llm") for d in stages["judge"]["deps"])
    # Every input of a stage is written by an earlier stage.
    written: set[str] = set()
    for name, entry in stages.items():
        for dep in entry["deps"]:
            if not dep.startswith("litecoder/"):
                assert dep in written, (name, dep)
        written |= set(entry["outs"]) | {next(iter(m)) for m in entry["metrics"]}
        written |= {next(iter(p)) for p in entry.get("plots", [])}
    # Every parameter a stage names is in params.yaml (DVC refuses the stage otherwise).
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, entry in stages.items():
        for key in entry.get("params", []):
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, (name, key)
                node = node[part]
    r = run(["litecoder", "dvc-yaml", "--check"], REPO)
    assert "up to date" in r.stdout


def test_a_new_helper_module_changes_the_stage_deps(tmp_path: Path) -> None:
    """A module a stage starts to import is a dependency of that stage in the generated
    dvc.yaml, and the drift check fails until dvc.yaml is regenerated."""
    copy = tmp_path / "p"
    copy.mkdir()
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "litecoder", copy / "litecoder", ignore=skip)
    shutil.copy(REPO / "dvc.yaml", copy / "dvc.yaml")
    env = {"PYTHONPATH": str(copy)}
    check = [sys.executable, "-m", "litecoder.cli", "dvc-yaml", "--check"]
    assert run(check, copy, env=env).returncode == 0
    (copy / "litecoder/dedup_helper.py").write_text("def norm(s: str) -> str:\n    return s\n")
    stage = copy / "litecoder/stages/dedup.py"
    uses = "\n\ndef _h() -> None:\n    from litecoder import dedup_helper  # noqa: F401\n"
    stage.write_text(stage.read_text() + uses)
    r = run(check, copy, env=env, check=False)
    assert r.returncode == 1 and "out of date" in r.stdout
    run([sys.executable, "-m", "litecoder.cli", "dvc-yaml"], copy, env=env)
    stages = yaml.safe_load((copy / "dvc.yaml").read_text())["stages"]
    assert "litecoder/dedup_helper.py" in stages["dedup"]["deps"]
    assert "litecoder/dedup_helper.py" not in stages["judge"]["deps"]


def test_no_import_cycles_in_litecoder() -> None:
    from litecoder.codegraph import closure, cycles, graph

    assert cycles() == []
    # The walk sees function-local imports and import paths Harbor loads, not TYPE_CHECKING.
    g = graph()
    assert "litecoder.harbor.environment" in g["litecoder.harbor.runner"]
    assert "litecoder.standin" in g["litecoder.endpoints"]
    assert "litecoder.context" not in g["litecoder.pipeline"]
    assert "litecoder.config.load" not in closure("litecoder.config")


def test_every_command_the_readme_names_has_help() -> None:
    import re

    readme = (REPO / "README.md").read_text()
    code = "\n".join(re.findall(r"```(?:bash)?\n(.*?)```", readme, re.S))
    named = set(re.findall(r"^\s*(?:\$ )?litecoder ([a-z][a-z-]+)", code, re.M))
    named |= set(re.findall(r"`litecoder ([a-z][a-z-]+)", readme))
    from litecoder.cli import COMMANDS

    assert named <= set(COMMANDS), named - set(COMMANDS)
    assert {"compare", "clean", "run", "params", "dvc-yaml"} <= named
    for cmd in sorted(named):
        r = run(["litecoder", cmd, "--help"], REPO)
        assert r.returncode == 0 and "usage:" in r.stdout.lower(), cmd
    r = run(["litecoder", "no-such-command"], REPO, check=False)
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_files_inside_a_location_are_named_once_by_role(tmp_path: Path) -> None:
    """Writer and readers of a file inside a directory output share one declared name."""
    from litecoder.pipeline import DATA, Paths

    paths = Paths(tmp_path)
    assert paths.file("sft", "train") == tmp_path / "data/sft/train.jsonl"
    assert paths.file("envs", "splits") == tmp_path / "data/envs/splits.json"
    with pytest.raises(KeyError, match="declares no file 'nope'"):
        paths.file("sft", "nope")
    # Every declared file lives inside its location, never beside or above it.
    for name, d in DATA.items():
        for f in d.files.values():
            assert "/" not in f and f not in (".", ".."), (name, f)
    # No stage spells a declared file name itself (the literal would drift from the spec).
    src = Path(__file__).resolve().parents[1] / "litecoder" / "stages"
    names = {f for d in DATA.values() for f in d.files.values() if f != "README.md"}
    for py in src.glob("*.py"):
        text = py.read_text()
        for f in names:
            assert f'"{f}"' not in text, f"{py.name} spells {f!r}: use Paths.file"


def test_stage_metrics_are_typed_and_checked_where_they_are_written(tmp_path: Path) -> None:
    """A stage whose numbers change shape fails when it writes them (naming the field), not
    later in the report; readers get typed metrics, and a stage that never ran reads empty."""
    from pydantic import ValidationError

    from litecoder.metrics import EvaluateMetrics, SftMetrics, load
    from litecoder.pipeline import Paths
    from litecoder.tracking import StageRun
    from tests.conftest import compose_cfg

    cfg = compose_cfg()
    bad = StageRun("sft", cfg, tmp_path, metrics={"rows": 3, "per_domain": {"ai_ml": "three"}})
    with pytest.raises(ValidationError, match=r"per_domain\.ai_ml"):
        bad.finish()
    assert not Paths(tmp_path).metrics("sft").exists()
    good = StageRun("sft", cfg, tmp_path, metrics={"rows": 3, "per_domain": {"ai_ml": 3}})
    good.metrics["tokens"] = {"mean": 12.5, "max": 20}
    good.finish()
    sft = load(Paths(tmp_path).metrics("sft"), SftMetrics)
    assert (sft.rows, sft.per_domain, sft.tokens.mean) == (3, {"ai_ml": 3}, 12.5)
    assert sft.stage == "sft" and sft.experiment == cfg.experiment.name
    ev = load(Paths(tmp_path).metrics("evaluate"), EvaluateMetrics)  # never ran
    assert ev.k == 1 and ev.score("tuned", "pass@1") is None
    ev = EvaluateMetrics.model_validate({"k": 2, "tuned/pass@1": 0.5, "tuned/pass@2": 0.75})
    assert (ev.score("tuned", "pass@1"), ev.score("tuned", "pass@2")) == (0.5, 0.75)


# Config a stage may read without declaring it: it changes no output (W&B tracking).
NOT_PARAMS = ("tracking",)


def _config_reads(source: str) -> set[str]:
    """The config fields a stage module reads: attribute chains from `ctx.cfg` (or any name
    bound to a part of it, e.g. `e = cfg.eval`), cut where they leave the config's fields
    (a method such as `cfg.teacher(role)` or `section.model_dump()`)."""
    import ast

    from pydantic import BaseModel

    from litecoder.config import Config

    def chain(node: ast.AST) -> tuple[str, list[str]] | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        return (node.id, parts[::-1]) if isinstance(node, ast.Name) else None

    def fields(path: list[str]) -> list[str]:
        """The longest prefix of `path` that names config fields."""
        model: Any = Config
        out: list[str] = []
        for p in path:
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                break
            if p not in model.model_fields:
                break
            out.append(p)
            model = model.model_fields[p].annotation
        return out

    tree = ast.parse(source)
    roots: dict[str, list[str]] = {"cfg": []}  # names bound to the config or a part of it
    for node in ast.walk(tree):  # `x = ctx.cfg...` / `x = cfg...` (aliases of aliases too)
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t, c = node.targets[0], chain(node.value)
            if isinstance(t, ast.Name) and c:
                root, parts = c
                if root == "ctx" and parts[:1] == ["cfg"]:
                    roots[t.id] = fields(parts[1:])
                elif root in roots:
                    roots[t.id] = fields([*roots[root], *parts])
    reads: set[str] = set()
    for node in ast.walk(tree):
        c = chain(node) if isinstance(node, ast.Attribute) else None
        if not c:
            continue
        root, parts = c
        if root == "ctx" and parts[:1] == ["cfg"]:
            path = fields(parts[1:])
        elif root in roots:
            path = fields([*roots[root], *parts])
        else:
            continue
        if path:
            reads.add(".".join(path))
    return {r for r in reads if not any(o.startswith(r + ".") for o in reads)}


def _reads_through_calls(module: str) -> dict[str, set[str]]:
    """The config fields read by the functions a module imports from litecoder that take the
    config (`cfg`) or a stage context (`ctx`), and by what those call in turn: field -> the
    functions that read it (e.g. calibrate reaching rollout's agent settings)."""
    import ast

    from litecoder.codegraph import module_file

    Fn = ast.FunctionDef | ast.AsyncFunctionDef

    def defs(mod: str) -> tuple[dict[str, Fn], dict[str, tuple[str, str]]]:
        tree = ast.parse(module_file(mod).read_text())
        fns = {n.name: n for n in tree.body if isinstance(n, Fn)}
        imported = {
            a.asname or a.name: (n.module, a.name)
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("litecoder")
            for a in n.names
        }
        return fns, imported

    todo = list(defs(module)[1].values())
    seen: set[tuple[str, str]] = set()
    found: dict[str, set[str]] = {}
    while todo:
        mod, name = todo.pop()
        if (mod, name) in seen or not module_file(mod).is_file():
            continue
        seen.add((mod, name))
        fns, imported = defs(mod)
        fn = fns.get(name)
        if fn is None:
            continue  # a class or a constant
        if not {a.arg for a in fn.args.args + fn.args.kwonlyargs} & {"cfg", "ctx"}:
            continue
        for r in _config_reads(ast.unparse(fn)):
            found.setdefault(r, set()).add(f"{mod}.{name}")
        for n in ast.walk(fn):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
                if n.func.id in fns:
                    todo.append((mod, n.func.id))
                elif n.func.id in imported:
                    todo.append(imported[n.func.id])
    return found


def test_every_config_field_a_stage_reads_is_one_of_its_params() -> None:
    """DVC re-runs a stage when one of its params changes: a field the stage reads but does
    not declare would leave a stale output (e.g. rollout reading envprep's build timeout).
    Read in the stage module itself, or in a function it calls that takes the config."""
    from litecoder.pipeline import STAGES

    src = Path(__file__).resolve().parents[1] / "litecoder" / "stages"
    for name, spec in STAGES.items():
        reads = {r: {name} for r in _config_reads((src / f"{name}.py").read_text())}
        for r, where in _reads_through_calls(f"litecoder.stages.{name}").items():
            reads.setdefault(r, set()).update(where)
        undeclared = {
            r: sorted(where) for r, where in sorted(reads.items())
            if not any(r == p or r.startswith(p + ".") for p in (*spec.params, *NOT_PARAMS))
        }  # fmt: skip
        assert not undeclared, f"stage {name} reads {undeclared} but declares {spec.params}"
    # Calls are followed across modules: calibrate runs rollout's agent settings.
    assert "rollout.model_info" in _reads_through_calls("litecoder.stages.calibrate")
    # The scan sees through aliases.
    assert _config_reads("e = ctx.cfg.eval\nx = e.model.path\ny = e.k\n") == {
        "eval.model.path",
        "eval.k",
    }

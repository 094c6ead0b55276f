"""Benchmark task sets on disk, in Harbor's layout, from wherever `eval` says they come from.

- registry: a Harbor registry dataset (`terminal-bench@2.0`), fetched by `harbor download`.
- terminal_bench: a dataset of the original Terminal-Bench registry (terminal-bench-core
  0.1.1: the git commit and the task ids it scores), converted by `harbor tasks migrate`.
- path: task dirs on disk, in Harbor's layout or the original one (then migrated).

Downloads land in `.litecoder/datasets/` and are reused. `preflight` runs before any model is
loaded: a dataset that is neither on disk nor reachable stops the stage with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from litecoder.config import TaskSource
from litecoder.harbor import runner
from litecoder.harbor.taskdir import content_hash
from litecoder.io import StageError, tail, write_json
from litecoder.net import reachable


def _harbor_registry_host() -> str:
    """The host `harbor download` asks first (Harbor's package registry)."""
    from harbor.registry.client.harbor.config import HARBOR_SUPABASE_URL

    return urllib.parse.urlsplit(HARBOR_SUPABASE_URL).hostname or ""


def layout(task_dir: Path) -> str | None:
    """'harbor' (task.toml), 'terminal_bench' (task.yaml) or None (not a task dir)."""
    if (task_dir / "task.toml").is_file():
        return "harbor"
    if (task_dir / "task.yaml").is_file():
        return "terminal_bench"
    return None


def find_tasks(root: Path) -> list[Path]:
    """The task dirs under `root` (itself, or any directory below it), sorted."""
    if layout(root):
        return [root]
    found = {p.parent for n in ("task.toml", "task.yaml") for p in root.rglob(n)}
    # A task dir's own subdirectories never hold another task.
    return sorted(d for d in found if not any(a in found for a in d.parents))


def cache_dir(cfg: TaskSource, root: Path) -> Path:
    if cfg.source == "registry":
        assert cfg.dataset is not None
        key = cfg.dataset
    else:
        tb = cfg.terminal_bench
        key = f"{tb.name}@{tb.version}"
    return root / ".litecoder" / "datasets" / key.replace("/", "__")


def _cached(cfg: TaskSource, root: Path) -> bool:
    return (cache_dir(cfg, root) / "tasks").is_dir() and bool(
        find_tasks(cache_dir(cfg, root) / "tasks")
    )


def preflight(cfg: TaskSource, root: Path) -> None:
    """Stop at once, before any model is loaded, when the tasks cannot be had."""
    if cfg.source == "path":
        assert cfg.path is not None
        p = Path(cfg.path) if Path(cfg.path).is_absolute() else root / cfg.path
        if not p.is_dir() or not find_tasks(p):
            raise StageError(f"{p}: no task dirs (task.toml or task.yaml) there")
        return
    if cfg.source == "local" or _cached(cfg, root):
        return
    if cfg.source == "registry":
        what, host = str(cfg.dataset), _harbor_registry_host()
    else:
        tb = cfg.terminal_bench
        what = f"{tb.name} {tb.version}"
        host = urllib.parse.urlsplit(tb.registry_url).hostname or ""
    why = reachable(host)
    if why:
        raise StageError(
            f"{cfg.what} needs the internet to fetch {what} ({why}); "
            f"give a local copy instead: {cfg.path_override}"
        )


def tasks(cfg: TaskSource, root: Path, log_dir: Path) -> list[Path]:
    """The benchmark's task dirs in Harbor's layout, fetched or migrated once."""
    if cfg.source == "path":
        assert cfg.path is not None
        src = Path(cfg.path) if Path(cfg.path).is_absolute() else root / cfg.path
        found = find_tasks(src)
        original = [d for d in found if layout(d) == "terminal_bench"]
        if not original:
            return found
        dest = root / ".litecoder" / "datasets" / f"migrated-{content_hash(src)[:16]}"
        if not (dest / "tasks").is_dir():
            _migrate(original, dest, log_dir)
        return sorted([d for d in found if layout(d) == "harbor"] + find_tasks(dest / "tasks"))
    dest = cache_dir(cfg, root)
    if not _cached(cfg, root):
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        if cfg.source == "registry":
            _download(cfg, dest, log_dir)
        else:
            _terminal_bench(cfg, dest, log_dir)
    return find_tasks(dest / "tasks")


def _run(cmd: list[str], log_path: Path, what: str, timeout: float) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(
            cmd, capture_output=True, text=True, env=runner.harbor_env(), timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise StageError(f"{what}: no answer in {timeout:g}s") from None
    log_path.write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise StageError(f"{what} failed: {tail(r.stdout + r.stderr, 3)} (log: {log_path})")


def _download(cfg: TaskSource, dest: Path, log_dir: Path) -> None:
    assert cfg.dataset is not None
    tmp = dest / "download"
    cmd = [runner.harbor_bin(), "download", cfg.dataset, "-o", str(tmp), "--export"]
    _run(cmd, log_dir / "download.log", f"could not download {cfg.dataset}", 3600)
    found = find_tasks(tmp)
    if not found:
        raise StageError(f"{cfg.dataset} has no tasks (looked in {tmp})")
    (dest / "tasks").mkdir()
    for d in found:
        os.replace(d, dest / "tasks" / d.name)
    shutil.rmtree(tmp, ignore_errors=True)
    write_json(dest / "SOURCE.json", {"registry": cfg.dataset, "tasks": len(found)})


def _migrate(task_dirs: list[Path], dest: Path, log_dir: Path) -> None:
    """Original-layout task dirs -> Harbor's layout (`harbor tasks migrate`), whole or not at
    all: a task the migration could not convert is an error, not a smaller benchmark."""
    staging = dest.with_name(dest.name + ".in")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for d in task_dirs:
        shutil.copytree(d, staging / d.name, symlinks=True)
    out = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [runner.harbor_bin(), "tasks", "migrate", "-i", str(staging), "-o", str(out / "tasks")]
    _run(cmd, log_dir / "migrate.log", "harbor tasks migrate", 3600)
    got = {d.name for d in find_tasks(out / "tasks")}
    missing = sorted({d.name for d in task_dirs} - got)
    if missing:
        raise StageError(
            f"harbor tasks migrate did not convert {len(missing)} task(s): "
            f"{', '.join(missing[:5])} (log: {log_dir / 'migrate.log'})"
        )
    shutil.rmtree(staging)
    dest.mkdir(parents=True, exist_ok=True)
    os.replace(out / "tasks", dest / "tasks")
    shutil.rmtree(out, ignore_errors=True)


def _registry_entry(cfg: TaskSource) -> dict[str, Any]:
    tb = cfg.terminal_bench
    try:
        with urllib.request.urlopen(tb.registry_url, timeout=60) as r:
            registry = json.loads(r.read())
    except (OSError, ValueError) as e:
        raise StageError(
            f"could not read the Terminal-Bench registry {tb.registry_url}: {e}"
        ) from None
    for entry in registry if isinstance(registry, list) else []:
        if entry.get("name") == tb.name and entry.get("version") == tb.version:
            if tb.commit and entry.get("commit_hash") != tb.commit:
                raise StageError(
                    f"{tb.name} {tb.version} now names commit {entry.get('commit_hash')}, "
                    f"not the pinned {tb.commit}: check it, then set eval.terminal_bench.commit"
                )
            return dict(entry)
    raise StageError(f"{tb.name} {tb.version} is not in {tb.registry_url}")


def _terminal_bench(cfg: TaskSource, dest: Path, log_dir: Path) -> None:
    """The pinned commit of the original repository, its scored task ids, migrated."""
    entry = _registry_entry(cfg)
    repo = dest / "src"
    commit = str(entry["commit_hash"])
    for cmd in (
        ["git", "init", "-q", str(repo)],
        ["git", "-C", str(repo), "fetch", "-q", "--depth", "1", entry["github_url"], commit],
        ["git", "-C", str(repo), "checkout", "-q", "FETCH_HEAD"],
    ):
        _run(cmd, log_dir / "git.log", f"git ({' '.join(cmd[1:4])})", 3600)
    src = repo / str(entry.get("dataset_path") or "tasks")
    ids = entry.get("task_id_subset") or [d.name for d in find_tasks(src)]
    dirs = [src / i for i in ids]
    absent = [i for i, d in zip(ids, dirs, strict=True) if layout(d) != "terminal_bench"]
    if absent:
        raise StageError(
            f"{len(absent)} task id(s) of {cfg.terminal_bench.name} {cfg.terminal_bench.version} "
            f"have no task dir at {commit[:12]}: {', '.join(absent[:5])}"
        )
    _migrate(dirs, dest, log_dir)
    shutil.rmtree(repo, ignore_errors=True)
    write_json(
        dest / "SOURCE.json",
        {k: entry.get(k) for k in ("name", "version", "github_url", "commit_hash", "dataset_path")}
        | {"tasks": len(ids)},
    )

"""Shared fixtures. The "model" in these tests is the offline stand-in teacher (a scripted
OpenAI-compatible server on loopback, started as its own process), never a patched function."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from litecoder.config import Config
from litecoder.config.load import compose, validate
from litecoder.standin import StandIn

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def pytest_configure() -> None:
    # No test touches W&B's servers or Harbor's price download.
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"


# The smoke fixture's `dvc repro` has its own limit (3600 s); the first test that uses it waits
# for all of it, so no per-test limit shorter than that may apply there (a loaded machine once
# took 922 s against a global 900).
SMOKE_TEST_TIMEOUT_S = 3600 + 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests on the smoke run's outputs run in a pytest process of their own (scripts/test.sh).
    for item in items:
        if "smoke" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.smoke)
            item.add_marker(pytest.mark.timeout(SMOKE_TEST_TIMEOUT_S))


# What Docker objects this pytest process made: everything litecoder makes carries its project
# root (litecoder.project); in-process it is this session's base temp dir, and every project a
# test runs a stage in lives under it. The leftover checks look only there, so two pytest
# processes can run Docker tests side by side.
_BASETEMP: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _docker_project(tmp_path_factory: pytest.TempPathFactory) -> None:
    from litecoder.sandbox import set_project

    base = tmp_path_factory.getbasetemp().resolve()
    _BASETEMP[:] = [str(base)]
    set_project(base)


@pytest.fixture(scope="session")
def stand_in() -> Iterator[StandIn]:
    with StandIn() as s:
        yield s


def compose_cfg(*overrides: str, base_url: str | None = None, check_env: bool = True) -> Config:
    """The default composition with test overrides; `base_url` points every role at a server."""
    ovs = ["tracking=disabled", *overrides]
    if base_url:
        ovs += [f"models.{r}.base_url={base_url}" for r in ("sample", "judge", "agent")]
    return validate(compose(REPO / "conf", ovs), check_env=check_env)


# What a project copy takes from this checkout.
PROJECT_FILES = ("conf", "litecoder", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore")


def make_project(dst: Path, *, git: bool = True) -> Path:
    """A copy of the project's experiment files (conf, dvc.yaml, params.yaml, and the code the
    stages depend on) as a fresh repo."""
    dst.mkdir(parents=True, exist_ok=True)
    copy_project_files(dst)
    if git:
        run(["git", "init", "-q", "-b", "main"], dst)
        run(["git", "config", "user.email", "t@example.com"], dst)
        run(["git", "config", "user.name", "t"], dst)
        run(["dvc", "init", "-q"], dst)
        run(["dvc", "config", "hydra.enabled", "True"], dst)
        run(["git", "add", "-A"], dst)
        run(["git", "commit", "-qm", "init"], dst)
    return dst


def copy_project_files(dst: Path) -> None:
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)


def run(
    cmd: list[str],
    cwd: Path,
    *,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and r.returncode != 0:
        raise AssertionError(
            f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        )
    return r


def point_offline_teacher(project: Path, base_url: str, tracking: str = "disabled") -> None:
    """Point the `offline` teacher at a running stand-in so its request counts span runs."""
    f = project / "conf/teacher/offline.yaml"
    f.write_text(f.read_text().replace("base_url: null", f"base_url: {base_url}"))
    c = project / "conf/config.yaml"
    c.write_text(c.read_text().replace("- tracking: offline", f"- tracking: {tracking}"))
    run(["litecoder", "params"], project)


# A finished smoke run kept between pytest runs (CI's second step reuses the first step's).
SMOKE_RUN_ENV = "LITECODER_SMOKE_RUN"


@pytest.fixture(scope="session")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dvc repro` of the whole pipeline on its offline defaults, in a fresh git + DVC copy of
    the project: the README's main job. Shared by the tests that check its outputs.

    With LITECODER_SMOKE_RUN=DIR: a finished run kept in DIR is copied, its experiment files
    refreshed from this checkout, and `dvc repro` re-runs only the stages whose code, config
    or data changed (none, when DIR came from this checkout); a run made here is kept there."""
    dst = tmp_path_factory.mktemp("smoke") / "p"
    kept = Path(os.environ[SMOKE_RUN_ENV]) if os.environ.get(SMOKE_RUN_ENV) else None
    reuse = kept is not None and (kept / "dvc.lock").is_file()
    if reuse:
        assert kept is not None
        shutil.copytree(kept, dst, symlinks=True)
        for name in PROJECT_FILES:
            if (dst / name).is_dir():
                shutil.rmtree(dst / name)
            else:
                (dst / name).unlink(missing_ok=True)
        copy_project_files(dst)
    else:
        make_project(dst, git=True)
    run(["dvc", "repro"], dst, timeout=3600)
    if kept is not None and not reuse:
        tmp = kept.with_name(kept.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(dst, tmp, symlinks=True)
        shutil.rmtree(kept, ignore_errors=True)
        tmp.rename(kept)  # whole or absent: a killed copy is never taken for a finished run
    return dst


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray head on loopback (2 CPUs) for sweeps with hydra/launcher=ray_cluster."""
    from litecoder.serve import free_port

    port = free_port()
    ray = str(BIN / "ray")
    tmp = tmp_path_factory.mktemp("ray")
    run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={tmp}"], REPO, timeout=300)  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


def docker_ok() -> bool:
    try:
        from litecoder.sandbox import docker_client

        docker_client().ping()
        return True
    except Exception:
        return False


def litecoder_leftovers() -> dict[str, list[str]]:
    """Containers and dangling images labelled by litecoder (kept task/base images excluded),
    of the projects of this pytest process (see `_docker_project`)."""
    from litecoder.sandbox.engine import IMAGE_LABEL, LABEL, PROJECT_LABEL, docker_client

    def ours(labels: dict[str, str] | None) -> bool:
        project = (labels or {}).get(PROJECT_LABEL, "")
        return any(project == b or project.startswith(b + "/") for b in _BASETEMP)

    client = docker_client()
    containers = [
        c.name
        for c in client.containers.list(all=True, ignore_removed=True, filters={"label": LABEL})
        if ours(c.labels)
    ]
    # The engine's list, not one inspect per image: another test process may remove an image
    # between the two (404).
    raw = client.api.images(filters={"dangling": True, "label": IMAGE_LABEL})
    dangling = [i["Id"] for i in raw if ours(i.get("Labels"))]
    return {"containers": containers, "dangling_images": dangling}

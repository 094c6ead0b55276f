"""A second Docker engine for real: a second dockerd on its own socket, with its own data and exec
roots its own cgroup parent (so none of its containers is where this host's cgroup lookup looks),
bridge and btrfs file system. envprep and a rollout are pointed at it with DOCKER_HOST alone:
everything is built and run there and nothing on the first engine; the containers get the same
hardening; the limits a trial hits are recorded, read through that engine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from litecoder.io import read_jsonl
from litecoder.sandbox.cgroups import cgroup_file
from litecoder.standin import library as S
from tests.conftest import REPO, point_offline_teacher, run
from tests.loopback_api import ScriptedAPI
from tests.test_envprep import FAST, _project_with_tasks

pytestmark = [pytest.mark.cluster, pytest.mark.docker]
BASE = "litecoder-base:bookworm"
# The trial's one command: more processes than the trial's limit (security.trial_pids), each
# gone by itself a little later.
STORM = "for i in $(seq 700); do sleep 20 & done 2>/dev/null; echo storm-done"


def _docker(host: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "-H", host, *args], capture_output=True, text=True, timeout=timeout
    )


def _sh(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{cmd}: {r.stderr[-2000:]}"


@pytest.fixture
def second_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """DOCKER_HOST of a second dockerd, started here and stopped (its data removed) after.

    It shares nothing the first engine holds: Docker's btrfs driver turns quotas off for the
    whole file system when it stops, and `--bridge none` deletes `docker0`, so the second
    engine gets a btrfs file system of its own (in a sparse file, simple quotas on, as
    scripts/setup.sh makes the first one) and a bridge of its own."""
    missing = [t for t in ("dockerd", "ip") if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        pytest.fail(f"a second engine needs root, dockerd and ip (missing: {missing}); "
                    "scripts/setup.sh installs them")  # fmt: skip
    tag = f"lc2-{os.getpid()}"
    work = tmp_path_factory.mktemp("engine")
    quota = bool(shutil.which("mkfs.btrfs"))
    data = work / "data"
    data.mkdir()
    if quota:
        _sh("truncate", "-s", "8G", str(work / "fs.img"))
        _sh("mkfs.btrfs", "-q", str(work / "fs.img"))
        _sh("mount", "-o", "loop,discard", str(work / "fs.img"), str(data))
        quota = (
            subprocess.run(
                ["python3", str(REPO / "scripts/btrfs_simple_quota.py"), str(data)],
                capture_output=True,
            ).returncode
            == 0
            or subprocess.run(["btrfs", "quota", "enable", str(data)]).returncode == 0
        )
    bridge = tag  # at most 15 characters
    _sh("ip", "link", "add", "name", bridge, "type", "bridge")
    _sh("ip", "addr", "add", "172.31.254.1/24", "dev", bridge)
    _sh("ip", "link", "set", bridge, "up")
    run_dir = Path("/run") / tag  # short: containerd's socket path has a length limit
    run_dir.mkdir(parents=True, exist_ok=True)
    host = f"unix://{run_dir}/docker.sock"
    log = work / "dockerd.log"
    args = [
        "dockerd", "--host", host, "--data-root", str(data / "docker"),
        "--exec-root", str(run_dir / "exec"), "--pidfile", str(run_dir / "docker.pid"),
        "--bridge", bridge, "--iptables=false", "--cgroup-parent", tag,
        *(["--storage-driver", "btrfs"] if quota else []),
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while _docker(host, "info").returncode != 0:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        # The base image every task builds from, carried over from the first engine.
        saved = subprocess.Popen(["docker", "save", BASE], stdout=subprocess.PIPE)
        loaded = subprocess.run(
            ["docker", "-H", host, "load"], stdin=saved.stdout, capture_output=True, timeout=600
        )
        saved.wait(60)
        assert loaded.returncode == 0, loaded.stderr[-2000:]
        yield {"host": host, "cgroup_parent": tag, "quota": quota}
    finally:
        ids = _docker(host, "ps", "-aq").stdout.split()
        if ids:
            _docker(host, "rm", "-f", *ids)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        if (work / "fs.img").exists():
            subprocess.run(["umount", "-l", str(data)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


def _turns(n: int, body: dict[str, Any]) -> list[tuple[Any, ...]]:
    """A Terminus-2 agent (JSON format): the storm, then done."""
    done = any(m.get("role") == "assistant" for m in body.get("messages", []))
    cmds = [] if done else [{"keystrokes": STORM + "\n", "duration": 5.0}]
    answer = {"analysis": "a", "plan": "p", "commands": cmds, "task_complete": done}
    return [("ok", json.dumps(answer))]


def _watch(host: str, project: Path, found: list[dict[str, Any]], stop: threading.Event) -> None:
    """HostConfig of the project's trial containers on the second engine, while they run."""
    import docker

    client = docker.DockerClient(base_url=host)
    while not stop.is_set():
        for c in client.containers.list(
            ignore_removed=True,
            filters={"label": ["litecoder.kind=trial", f"litecoder.project={project.resolve()}"]},
        ):
            if not any(f["Id"] == c.id for f in found):
                found.append(c.attrs)
        time.sleep(0.3)


def _ours(host: str, project: Path, what: str) -> list[str]:
    """IDs of this project's containers or images on an engine (`host`; "" for the first)."""
    cmd = ["docker", *(["-H", host] if host else [])]
    flt = f"label=litecoder.project={project.resolve()}"
    args = ["ps", "-aq"] if what == "containers" else ["images", "-q"]
    r = subprocess.run([*cmd, *args, "--filter", flt], capture_output=True, text=True)
    return r.stdout.split()


def test_envprep_and_a_rollout_run_on_a_second_engine(
    second_engine: dict[str, Any], tmp_path: Path
) -> None:
    host = second_engine["host"]
    env = {"DOCKER_HOST": host}
    project = _project_with_tasks(
        tmp_path, [S.by_id("ds_csv_clean"), S.scenarios()["escape_fork_bomb"]]
    )
    quota = [] if second_engine["quota"] else ["security.disk_quota=false"]
    # envprep with its Harbor oracle check: sandboxes, image builds and a trial, all there.
    fast = [a for a in FAST if not a.startswith("envprep.validate.harbor_oracle")]
    run(["litecoder", "envprep", *fast, *quota], project, env=env, timeout=1800)
    assert (project / "data/envs/t-ds-csv-clean/task.toml").exists()
    [failed] = read_jsonl(project / "data/envs/failed.jsonl")
    # The fork bomb's limit hit was counted by the cgroup reader on that engine: the
    # container's cgroup is not in this host's lookup (its own cgroup parent).
    assert failed["task_id"] == "t-escape-fork-bomb", failed
    assert "process limit reached" in failed["reason"], failed
    checks = json.loads((project / "metrics/envprep.json").read_text())["checks"]
    assert checks["harbor_oracle"]["passed"] == checks["harbor_oracle"]["run"] == 1, checks

    found: list[dict[str, Any]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(host, project, found, stop), daemon=True)
    with ScriptedAPI(script=_turns, models=["litecoder-offline-stand-in"]) as api:
        point_offline_teacher(project, api.base_url)
        watcher.start()
        try:
            cmd = ["litecoder", "rollout", "rollout=terminus2", "rollout.n_attempts=1",
                   "rollout.split=all", *quota]  # fmt: skip
            run(cmd, project, env=env, timeout=1800)
        finally:
            stop.set()
            watcher.join(30)
    m = json.loads((project / "metrics/rollout.json").read_text())
    assert m["trials"] == 1 and m["errors"] == 0, m
    [trial] = [p.parent for p in (project / "data/rollouts").rglob("litecoder.json")]
    limits = json.loads((trial / "litecoder.json").read_text())["limits"]
    assert limits["pids_limit_hits"] >= 1, limits  # read through the second engine
    assert m["trials_hitting_limits"].get("pids_limit_hits") == 1, m

    # The trial container there had the hardening a trial has on the first engine.
    assert found, "no trial container seen on the second engine"
    hc = found[0]["HostConfig"]
    assert hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"]
    assert not hc["Privileged"] and hc["Init"] and hc["NetworkMode"] == "none"
    assert hc["PidsLimit"] == 512 and hc["Memory"] == hc["MemorySwap"] > 0  # no swap
    assert not hc.get("Binds") and not hc.get("Mounts")
    if second_engine["quota"]:
        assert hc.get("StorageOpt", {}).get("size"), hc.get("StorageOpt")
    assert cgroup_file(found[0]["Id"], "pids", "pids.events") is None  # not in this host's view

    # Everything was built and run there, nothing here; nothing is left running there.
    assert _ours(host, project, "images"), "no image of the project on the second engine"
    assert _ours("", project, "images") == [] and _ours("", project, "containers") == []
    assert _ours(host, project, "containers") == []
    left = _docker(host, "ps", "-aq", "--filter", "label=litecoder").stdout.split()
    assert left == [], left  # the cgroup readers too


def test_the_first_engine_is_unharmed_when_the_second_stops() -> None:
    """(After the test above, whose engine is gone by now.) The first engine still has its
    default bridge and still enforces disk quotas."""
    assert Path("/sys/class/net/docker0").exists()
    quota = subprocess.run(["docker", "info", "-f", "{{.Driver}}"], capture_output=True,
                           text=True).stdout.strip() in ("btrfs", "zfs")  # fmt: skip
    if quota:
        r = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "--storage-opt", "size=64m", BASE,
             "sh", "-c", "dd if=/dev/zero of=/fill bs=1M count=128 2>&1; echo rc=$?"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        assert "rc=1" in r.stdout and "Disk quota exceeded" in r.stdout, r.stdout[-2000:]

"""The sandbox layer contains what an LLM-written command may try."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

from litecoder.sandbox import (
    DockerUnavailable,
    Limits,
    Sandbox,
    build_image,
    docker_client,
    labels,
    remove_labelled,
)
from tests.conftest import REPO, run

BASE = "litecoder-base:bookworm"
pytestmark = pytest.mark.docker


def sandbox(**kw: object) -> Sandbox:
    lim = Limits(**{"memory_mb": 256, "pids": 64, "command_timeout_s": 4, **kw})  # type: ignore[arg-type]
    return Sandbox(BASE, lim, labels("test-sandbox", "t", "scratch"))


def test_container_is_unprivileged_and_offline() -> None:
    with sandbox() as s:
        assert s.exec("id -u").output.strip() == "0"
        r = s.exec("mount --bind / /mnt")
        assert r.exit_code != 0 and "permission denied" in r.output.lower()
        assert s.exec("test -e /var/run/docker.sock").exit_code == 1
        assert s.exec("ls /sys/class/net").output.split() == ["lo"]
        caps = s.exec("grep CapEff /proc/self/status").output.split()[1]
        assert int(caps, 16) & (1 << 21) == 0  # no CAP_SYS_ADMIN
        assert "no_new_privs" not in s.exec("true").output  # sanity: exec works
        inspect = s.container.attrs["HostConfig"]
        assert inspect["Binds"] in (None, []) and inspect["Privileged"] is False
        assert "no-new-privileges" in inspect["SecurityOpt"]


def test_timeout_kills_a_hung_command() -> None:
    with sandbox() as s:
        r = s.exec("sleep 1000")
        assert r.timed_out and r.violation and "timed out" in r.violation
        assert r.duration_s < 15
        assert s.exec("echo alive").output.strip() == "alive"


def test_memory_limit_kills_the_hog() -> None:
    with sandbox() as s:
        r = s.exec("python3 -c 'x=[]\nwhile True: x.append(bytearray(32*2**20))'", timeout_s=60)
        assert r.oom_killed and r.violation == "killed: out of memory"


def test_fork_bomb_is_contained_and_others_are_unharmed() -> None:
    other_ok: list[bool] = []

    def other_task() -> None:
        with sandbox() as s2:
            other_ok.append(
                s2.exec("for i in $(seq 20); do echo $i; done | wc -l").output.strip() == "20"
            )

    with sandbox() as s:
        t = threading.Thread(target=other_task)
        r = s.exec(":(){ :|:& };:", timeout_s=5)
        t.start()
        t.join(60)
        assert r.pids_exhausted and "process limit" in (r.violation or "")
    assert other_ok == [True]
    # The host can still start processes.
    assert subprocess.run(["true"]).returncode == 0


def test_output_is_truncated() -> None:
    with sandbox(output_chars=1000) as s:
        r = s.exec("seq 1 100000")
        assert r.truncated and len(r.output) < 1200 and "truncated" in r.output


def test_build_failure_is_clear_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\nRUN echo building && exit 3\n")
    client = docker_client()
    lab = labels("test-build", "t", "task-image")
    with pytest.raises(Exception, match="docker build failed") as err:
        build_image(client, tmp_path, "litecoder-test/broken:1", lab, timeout_s=120)
    assert "building" in getattr(err.value, "log_tail", "")
    remove_labelled(client, run="test-build")
    assert not client.containers.list(all=True, filters={"label": ["litecoder.run=test-build"]})


def test_docker_missing_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(DockerUnavailable) as err:
        docker_client()
    assert "\n" not in str(err.value) and "Docker is not available" in str(err.value)
    r = run(
        ["litecoder", "envprep", "tracking=disabled"],
        REPO,
        check=False,
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: Docker is not available")


def test_clean_removes_leftovers() -> None:
    s = sandbox()
    s.start()  # never closed: what a SIGKILLed stage leaves behind
    name = s.container.name
    r = run(["litecoder", "clean"], REPO)
    assert "removed" in r.stdout
    names = [c.name for c in docker_client().containers.list(all=True)]
    assert name not in names
    assert os.environ.get("PATH")


def test_reap_trials_removes_only_the_jobs_orphaned_trial_containers(tmp_path: Path) -> None:
    from litecoder.taskdir import reap_trials

    client = docker_client()
    job = tmp_path / "job"
    (job / "T-Reap__abc123").mkdir(parents=True)  # Harbor lower-cases it for compose
    key = "com.docker.compose.project"
    mine = client.containers.create(BASE, "sleep 60", labels={key: "t-reap__abc123__env"})
    other = client.containers.create(BASE, "sleep 60", labels={key: "t-other__def456__env"})
    try:
        assert reap_trials(job) == 1
        names = {c.id for c in client.containers.list(all=True, filters={"label": key})}
        assert mine.id not in names and other.id in names
        assert reap_trials(tmp_path / "missing") == 0
    finally:
        for c in (mine, other):
            with contextlib.suppress(Exception):
                c.remove(force=True)

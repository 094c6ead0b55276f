"""The sandbox layer contains what an LLM-written command may try."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from litecoder.sandbox import (
    PROJECT_LABEL,
    ContainerLimits,
    DockerUnavailable,
    Sandbox,
    build_image,
    docker_client,
    image_labels,
    labels,
    remove_labelled,
    set_project,
)
from tests.conftest import REPO, run

BASE = "litecoder-base:bookworm"
pytestmark = pytest.mark.docker


def sandbox(**kw: object) -> Sandbox:
    lim = ContainerLimits(**{"memory_mb": 256, "pids": 64, "command_timeout_s": 4, **kw})  # type: ignore[arg-type]
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
        assert r.duration_s < 300  # cut, not run for 1000 s (a margin for a loaded machine)
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


def test_read_file_takes_regular_files_only() -> None:
    with sandbox() as s:
        s.exec("mkdir -p /logs && echo 1 > /logs/r.txt && ln -s /etc/passwd /logs/link"
               " && head -c 5000 /dev/zero > /logs/big")  # fmt: skip
        assert s.read_file("/logs/r.txt") == b"1\n"
        assert s.read_file("/logs/missing") is None
        assert s.read_file("/logs/link") is None  # a link is not followed
        assert s.read_file("/logs/big", max_bytes=4096) is None
        assert s.read_file("/logs") is None  # a directory


def test_output_is_truncated() -> None:
    with sandbox(output_chars=1000) as s:
        r = s.exec("seq 1 100000")
        assert r.truncated and len(r.output) < 1200 and "bytes cut" in r.output
        assert r.output.startswith("1\n2\n") and r.output.endswith("100000\n")


def test_a_1gb_output_flood_is_streamed_not_held() -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with sandbox(output_chars=2000, command_timeout_s=120) as s:
        r = s.exec("yes | head -c 1000000000")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert r.output_bytes == 1_000_000_000 and r.truncated and len(r.output) < 2200
    assert grown_mb < 100, f"litecoder grew by {grown_mb:.0f} MB"
    assert "only its head and tail" in r.notes()[0]


def test_commands_end_when_they_end() -> None:
    """Whatever a command leaves running (setsid, a killed parent) is stopped after it, and
    the model's own `timeout` is not mistaken for the sandbox's."""
    with sandbox() as s:
        r = s.exec("setsid sleep 1000 >/dev/null 2>&1 & echo started")
        assert r.exit_code == 0 and r.stray_processes == 1 and not r.violation
        assert "were stopped" in r.notes()[0]
        assert s.exec("pgrep -x sleep | wc -l").output.split()[0] == "1"  # only the keeper
        r = s.exec("sleep 1000 & kill -9 $PPID")
        assert r.stray_processes >= 1
        assert s.exec("pgrep -x sleep | wc -l").output.split()[0] == "1"
        r = s.exec("timeout 1 sleep 5")
        assert r.exit_code == 124 and not r.timed_out and r.violation is None
        r = s.exec("kill -9 -1")  # even the container's keeper: the sandbox comes back
        assert s.exec("echo alive").output.strip() == "alive"


def test_silent_fork_bomb_is_an_error_not_exit_0() -> None:
    with sandbox() as s:
        r = s.exec(":(){ :|:& };: 2>/dev/null")
        assert r.pids_exhausted and r.violation == "process limit reached (fork bomb?)"
        assert s.exec("echo alive").output.strip() == "alive"


def test_disk_quota_stops_a_disk_fill(tmp_path: Path) -> None:
    free_before = shutil.disk_usage("/").free
    with sandbox(disk_mb=200, command_timeout_s=60) as s:
        r = s.exec("dd if=/dev/zero of=/fill bs=1M count=5000")
        assert r.disk_full and r.violation == "disk limit reached"
        assert "Disk quota exceeded" in r.output or "No space left" in r.output
        size = int(s.exec("stat -c %s /fill").output.strip())
        assert size <= 200 * 2**20
    assert free_before - shutil.disk_usage("/").free < 400 * 2**20  # 5 GB were asked for


def test_engine_without_quota_support_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from litecoder.sandbox import engine

    monkeypatch.setitem(engine._QUOTA_PROBES, str(docker_client().api.base_url), ("no", True))
    with pytest.raises(engine.DiskQuotaUnsupported, match=r"security\.disk_quota=false"):
        sandbox().start()


def test_build_failure_is_clear_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\nRUN echo building && exit 3\n")
    client = docker_client()
    lab = image_labels("test-build", "t", "task-image")
    with pytest.raises(Exception, match="docker build failed") as err:
        build_image(client, tmp_path, "litecoder-test/broken:1", lab, timeout_s=120)
    assert "building" in getattr(err.value, "log_tail", "")
    remove_labelled(client, run="test-build")
    assert not client.containers.list(
        all=True, ignore_removed=True, filters={"label": ["litecoder.run=test-build"]}
    )


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


@pytest.fixture
def own_project(tmp_path: Path) -> Iterator[Path]:
    """A project of this test's own: `litecoder clean` (run in it) sees only what it made."""
    from litecoder.sandbox.engine import project

    before = Path(project())
    set_project(tmp_path)
    try:
        yield tmp_path.resolve()
    finally:
        set_project(before)


def test_clean_removes_leftovers(own_project: Path) -> None:
    s = sandbox()
    s.start()  # never closed: what a SIGKILLed stage leaves behind
    name = s.container.name
    r = run(["litecoder", "clean"], own_project)
    assert "removed 1 container(s)" in r.stdout
    names = [c.name for c in docker_client().containers.list(all=True, ignore_removed=True)]
    assert name not in names
    assert os.environ.get("PATH")


def test_reap_removes_only_the_jobs_trial_containers(tmp_path: Path) -> None:
    from litecoder.harbor.runner import reap, run_label

    client = docker_client()
    job = run_label(tmp_path / "job")
    mine = client.containers.create(BASE, "sleep 60", labels=labels(job, "t", "trial"))
    other = client.containers.create(BASE, "sleep 60", labels=labels("other-job", "t", "trial"))
    try:
        assert reap(job) == 1
        ids = {c.id for c in client.containers.list(all=True, ignore_removed=True)}
        assert mine.id not in ids and other.id in ids
        assert reap(run_label(tmp_path / "missing")) == 0
    finally:
        for c in (mine, other):
            with contextlib.suppress(Exception):
                c.remove(force=True)


def test_clean_removes_what_litecoder_made_and_nothing_else(own_project: Path) -> None:
    tmp_path = own_project
    client = docker_client()
    run_id = "test-clean-own"
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\nRUN true\n")
    build_image(
        client, tmp_path, "litecoder-test/own:1", image_labels(run_id, "t", "task-image"), 120
    )
    build_image(client, tmp_path, "not-litecoder/foreign:1", {"other": "1"}, 120)
    net = client.networks.create("litecoder-test-net", labels=labels(run_id, None, "trial"))
    vol = client.volumes.create("litecoder-test-vol", labels=labels(run_id, None, "trial"))
    foreign = client.containers.create(BASE, "true", labels={"other": "1"})
    # litecoder's, of another project on this Docker host: only --all-projects removes it.
    elsewhere = client.containers.create(
        BASE, "true", labels={**labels(run_id, None, "trial"), PROJECT_LABEL: "/elsewhere"}
    )
    try:
        r = run(["litecoder", "clean", "--images"], own_project)
        assert "network(s)" in r.stdout and "volume(s)" in r.stdout
        # It says what it left: at least that one (other test processes may have more).
        left = re.search(r"(\d+) container\(s\) of other projects left", r.stdout)
        assert left and int(left.group(1)) >= 1, r.stdout
        assert elsewhere.id in {c.id for c in client.containers.list(all=True, ignore_removed=True)}
        # --all-projects would also remove other test processes' containers: the same call
        # in-process, narrowed to that other project.
        assert remove_labelled(client, project="/elsewhere")["containers"] == 1
        names = {t for i in client.images.list() for t in i.tags}
        assert "litecoder-test/own:1" not in names and "not-litecoder/foreign:1" in names
        assert BASE in names  # the base image goes only with --base-image
        assert not client.networks.list(names=["litecoder-test-net"])
        assert "litecoder-test-vol" not in {v.name for v in client.volumes.list()}
        assert foreign.id in {c.id for c in client.containers.list(all=True, ignore_removed=True)}
    finally:
        for thing in (foreign, elsewhere, net, vol):
            with contextlib.suppress(Exception):
                thing.remove(force=True) if thing is not net else thing.remove()
        with contextlib.suppress(Exception):
            client.images.remove("not-litecoder/foreign:1", force=True)

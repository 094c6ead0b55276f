"""Harbor trials under litecoder's limits, tried by a hostile agent; the README's security table
against what `docker inspect` shows for sandboxes, build steps and trial containers; task
dirs whose compose file could reach the host."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from litecoder.harbor import compose, runner
from litecoder.sandbox import (
    ContainerLimits,
    Sandbox,
    build_image,
    docker_client,
    image_labels,
    labels,
)
from tests.conftest import REPO, compose_cfg, litecoder_leftovers
from tests.loopback_api import ScriptedAPI

pytestmark = pytest.mark.docker
BASE = "litecoder-base:bookworm"
CANARY = Path("/tmp/litecoder-trial-canary")

# The hostile agent: Terminus-2 turns (JSON format), one command each, then task_complete.
HOSTILE = [
    # Privileged and special files where Harbor copies them out (the agent's log dir).
    "cp /bin/bash /logs/agent/rootsh; chmod 4755 /logs/agent/rootsh; "
    "mknod /logs/agent/disk b 8 0; mkfifo /logs/agent/fifo; ln -s / /logs/agent/rootlink; "
    f"ln -s {CANARY}/keep.txt /logs/agent/canary; echo files-done",
    # (The fill is removed again, so that Harbor can still copy the agent's logs out.)
    "dd if=/dev/zero of=/fill bs=1M count=100000; rm -f /fill; echo fill-done",
    "yes | head -c 1000000000 | tail -c 20; echo flood-done",
    "setsid sleep 424242 >/dev/null 2>&1 & echo escapee-started",
    ":(){ :|:& };:",
]


def _turn(i: int) -> str:
    if i < len(HOSTILE):
        cmd = {"keystrokes": HOSTILE[i] + "\n", "duration": 3.0}
        return json.dumps(
            {"analysis": "step", "plan": "next", "commands": [cmd], "task_complete": False}
        )
    return json.dumps({"analysis": "done", "plan": "done", "commands": [], "task_complete": True})


def _script(n: int, body: dict[str, Any]) -> list[tuple[Any, ...]]:
    turns = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
    return [("ok", _turn(turns))]


def _task(root: Path) -> Path:
    from harbor.models.task.config import TaskConfig

    d = root / "t-hostile"
    (d / "environment").mkdir(parents=True)
    (d / "tests").mkdir()
    (d / "solution").mkdir()
    (d / "instruction.md").write_text("Write `hello` to /app/out.txt.\n")
    (d / "environment/Dockerfile").write_text(f"FROM {BASE}\nRUN mkdir -p /app\nWORKDIR /app\n")
    (d / "tests/test.sh").write_text(
        "#!/bin/bash\nmkdir -p /logs/verifier\n"
        "grep -q hello /app/out.txt && echo 1 > /logs/verifier/reward.txt "
        "|| echo 0 > /logs/verifier/reward.txt\n"
    )
    (d / "solution/solve.sh").write_text("#!/bin/bash\necho hello > /app/out.txt\n")
    cfg = TaskConfig.model_validate(
        {
            "agent": {"timeout_sec": 600},
            "verifier": {"timeout_sec": 120},
            "environment": {"cpus": 1, "memory_mb": 512, "storage_mb": 300},
        }
    )
    (d / "task.toml").write_text(cfg.model_dump_toml())
    return d


def _inspect_while_running(label: str, found: dict[str, Any], stop: threading.Event) -> None:
    client = docker_client()
    while not stop.is_set() and not found:
        for c in client.containers.list(
            ignore_removed=True, filters={"label": f"litecoder.run={label}"}
        ):
            found.update(c.attrs)
            return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def hostile_trial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real Harbor trial (Terminus-2) of the hostile agent, staged and run exactly as
    rollouts and evaluation run theirs."""
    root = tmp_path_factory.mktemp("hostile")
    CANARY.mkdir(exist_ok=True)
    (CANARY / "keep.txt").write_text("host\n")
    canary_before = (CANARY / "keep.txt").stat().st_mtime_ns
    free_before = shutil.disk_usage("/").free
    cfg = compose_cfg()
    job_dir = root / "jobs" / "hostile"
    label = runner.run_label(job_dir)
    staged = runner.stage(
        [_task(root / "src")], root / "staged", run=label, policy=runner.TrialPolicy.of(cfg)
    )
    found: dict[str, Any] = {}
    stop = threading.Event()
    with ScriptedAPI(script=_script) as api:
        conf = runner.job_config(
            job_name="hostile",
            jobs_dir=root / "jobs",
            agents=[
                {
                    "name": "terminus-2",
                    "model_name": "openai/hostile-agent",
                    "kwargs": {
                        "api_base": api.base_url,
                        "parser_name": "json",
                        "max_turns": 12,
                        "model_info": {"max_input_tokens": 131072, "max_output_tokens": 8192},
                    },
                }
            ],
            tasks=staged,
        )
        (root / "job.json").write_text(json.dumps(conf))
        watcher = threading.Thread(target=_inspect_while_running, args=(label, found, stop))
        watcher.start()
        try:
            _, rc = runner.run_harbor(
                [runner.harbor_bin(), "run", "-c", str(root / "job.json"), "-y"],
                env=runner.harbor_env(OPENAI_API_KEY="test"),
                job_dir=job_dir,
                log_path=root / "harbor.log",
                timeout_s=1800,
            )
        finally:
            stop.set()
            watcher.join(30)
        turns = len(api.requests)
    return {
        "job_dir": job_dir,
        "rc": rc,
        "inspect": found,
        "turns": turns,
        "free_before": free_before,
        "canary_before": canary_before,
        "log": (root / "harbor.log").read_text(errors="replace"),
    }


def test_hostile_trial_is_contained_and_reported(hostile_trial: dict[str, Any]) -> None:
    job = hostile_trial["job_dir"]
    trials = [d for d in job.iterdir() if d.is_dir()]
    assert len(trials) == 1, hostile_trial["log"][-2000:]
    trial = trials[0]
    assert hostile_trial["turns"] >= len(HOSTILE), "the agent did not get to every command"
    # Nothing privileged, special or linked came out: litecoder's environment copied regular
    # files and directories only.
    for p in job.rglob("*"):
        st = p.lstat()
        assert stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode), p
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), p
    report = runner.trial_report(trial)
    sanitized = {r["path"]: r["reason"] for r in report["sanitized"]}
    assert sanitized["/logs/agent/rootsh"] == "setuid/setgid bit dropped (mode 4755)"
    assert sanitized["/logs/agent/fifo"] == "device, FIFO or socket not copied"
    assert sanitized["/logs/agent/canary"] == "link not copied"
    assert sanitized["/logs/agent/rootlink"] == "link not copied"
    assert not (trial / "agent/disk").exists()  # mknod is not allowed in a trial
    # The fork bomb's processes were gone before the verifier ran: its first command (Harbor
    # removing stale reward files) found free process slots, and the trial ended in a verdict.
    assert json.loads((job / "config.json").read_text())["verifier"]["import_path"] == (
        runner.VERIFIER_IMPORT_PATH
    )
    result = json.loads((trial / "result.json").read_text())
    assert result.get("exception_info") is None, result["exception_info"]
    assert result["verifier_result"] is not None
    assert "processes_killed_before_verifier" in report["environment"], (
        result.get("exception_info"),
        (trial / "trial.log").read_text()[-3000:],
    )
    assert report["environment"]["processes_killed_before_verifier"] > 0
    # The limits held, and litecoder saw them hit.
    limits = report["limits"]
    assert limits["pids_limit_hits"] > 0, report
    seen = (trial / "agent/trajectory.json").read_text()
    assert "Disk quota exceeded" in seen and "flood-done" in seen
    # The host is unchanged: no container, no escaped process, bounded disk use.
    assert litecoder_leftovers()["containers"] == []
    ps = subprocess.run(["pgrep", "-f", "sleep 424242"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
    assert hostile_trial["free_before"] - shutil.disk_usage("/").free < 1024 * 2**20
    assert (CANARY / "keep.txt").read_text() == "host\n"
    assert (CANARY / "keep.txt").stat().st_mtime_ns == hostile_trial["canary_before"]


# --- the README's table, checked against docker inspect ----------------------------------------


def _readme_table() -> dict[str, dict[str, str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("### What each container may do", 1)[1].split("\n\n", 2)[1]
    rows = [r.strip().strip("|").split("|") for r in section.strip().splitlines()]
    header = [h.strip() for h in rows[0]]
    out: dict[str, dict[str, str]] = {}
    for r in rows[2:]:
        cells = [c.strip() for c in r]
        out[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
    return out


def _summarise(
    attrs: dict[str, Any], *, task_memory_mb: int = 0, task_storage_mb: int = 0
) -> dict[str, str]:
    """The README's columns, read off `docker inspect` (a trial's memory and disk in terms of
    its task.toml)."""
    from litecoder.sandbox.engine import _quota

    hc = attrs["HostConfig"]
    client = docker_client()
    image = attrs["Config"]["Image"]
    image_mb = client.images.get(image).attrs["Size"] // 2**20 if _quota(client, image)[1] else 0
    caps = sorted(c.removeprefix("CAP_") for c in hc.get("CapAdd") or [])
    dropped_all = "ALL" in (hc.get("CapDrop") or [])
    mem, swap = hc.get("Memory") or 0, hc.get("MemorySwap") or 0
    mounts = [m for m in attrs.get("Mounts") or [] if m.get("Type") in ("bind", "volume")]
    network = hc.get("NetworkMode") or "default"
    if network.startswith("litecoder-"):  # a trial's own network: what it lets through
        net = client.networks.get(network).attrs
        host_address = (net.get("Options") or {}).get("com.docker.network.bridge.inhibit_ipv4")
        if net.get("Internal") and host_address == "true":
            network = "internal, no host address"
    size = (hc.get("StorageOpt") or {}).get("size")
    disk_mb = int(size.rstrip("M")) - image_mb if size else 0
    disk = f"quota {disk_mb} MB" if size else "no quota"
    if size and disk_mb == task_storage_mb:
        disk = "quota: task's storage_mb"
    memory = f"{mem // 2**20} MB" if mem else "no limit"
    if mem and mem // 2**20 == task_memory_mb:
        memory = "task's memory_mb"
    return {
        "capabilities": f"none but {', '.join(caps)}" if dropped_all else "Docker's default set",
        "no-new-privileges": "yes"
        if any(o.startswith("no-new-privileges") for o in hc.get("SecurityOpt") or [])
        else "no",
        "pids": str(hc["PidsLimit"]) if hc.get("PidsLimit") else "no limit",
        "memory": memory,
        "swap": "none" if mem and swap == mem else "allowed",
        "disk": disk,
        "network": network,
        "mounts": "none" if not mounts else ", ".join(m["Destination"] for m in mounts),
    }


def _build_step_inspect(tmp_path: Path) -> dict[str, Any]:
    """`docker inspect` of a running RUN step of litecoder's builder."""
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\nRUN sleep 8\n")
    client = docker_client()
    base_id = client.images.get(BASE).id
    found: dict[str, Any] = {}

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not found:
            for c in client.containers.list(ignore_removed=True, filters={"ancestor": base_id}):
                if "sleep 8" in " ".join(c.attrs["Config"].get("Cmd") or []):
                    found.update(c.attrs)
                    return
            time.sleep(0.2)

    t = threading.Thread(target=watch)
    t.start()
    cfg = compose_cfg()
    lim = cfg.security.build
    build_image(
        client, tmp_path, "litecoder-test/step:1", image_labels("t", None, "scratch"), 300, lim
    )
    t.join(10)
    client.images.remove("litecoder-test/step:1", force=True)
    return found


def _sidecar_trial(cfg: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The README's columns for a trial with a sidecar, staged and started as a Harbor trial
    of such a task is (litecoder's trial environment starts exactly this)."""
    from litecoder.sandbox.trial import TrialContainers, TrialSpec

    root = Path(tempfile.mkdtemp(prefix="litecoder-sidecar-"))
    task = _task(root / "src")
    (task / "environment/docker-compose.yaml").write_text(
        "services:\n  main:\n    depends_on: [db]\n  db:\n"
        f"    image: {BASE}\n    command: [sleep, infinity]\n"
    )
    try:
        [staged] = runner.stage(
            [task], root / "staged", run="test-table", policy=runner.TrialPolicy.of(cfg)
        )
        box = TrialContainers(TrialSpec.read(staged / "environment"), "table-sidecar")
        box.start()
        try:
            attrs = {n: c.client.api.inspect_container(c.id) for n, c in box.containers.items()}
            views = (
                _summarise(attrs["main"], task_memory_mb=512, task_storage_mb=300),
                _summarise(attrs["db"]),
            )
        finally:
            box.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return views


def test_readme_security_table_is_what_docker_inspect_shows(
    hostile_trial: dict[str, Any], tmp_path: Path
) -> None:
    table = _readme_table()
    cfg = compose_cfg()
    s = cfg.envprep.sandbox
    limits = ContainerLimits(
        cpus=s.cpus,
        memory_mb=s.memory_mb,
        pids=s.pids,
        disk_mb=s.disk_mb,
        capabilities=tuple(cfg.security.capabilities),
    )
    with Sandbox(BASE, limits, labels("test-table", "t", "scratch")) as sb:
        sandbox_view = _summarise(sb.container.attrs)
    build_view = _summarise(_build_step_inspect(tmp_path))
    trial_view = _summarise(hostile_trial["inspect"], task_memory_mb=512, task_storage_mb=300)
    main_view, side_view = _sidecar_trial(cfg)
    views = {
        "envprep sandbox": sandbox_view,
        "image build (RUN step)": build_view,
        "Harbor trial": trial_view,
        "trial with a sidecar": main_view,
        "trial sidecar": side_view,
    }
    for row, view in views.items():
        for column, shown in table[row].items():
            expected = re.sub(r"\s*\(.*\)$", "", shown)  # the README may explain in brackets
            assert view[column] == expected, (row, column, view[column], shown)


# --- compose files that could reach the host ----------------------------------------------------

HOSTILE_COMPOSE = {
    "host mount": "services:\n  main:\n    volumes: ['/:/host']\n",
    "bind mount": "services:\n  main:\n    volumes: [{type: bind, source: /etc, target: /x}]\n",
    "privileged": "services:\n  main:\n    privileged: true\n",
    "capability": "services:\n  main:\n    cap_add: [SYS_ADMIN]\n",
    "device": "services:\n  main:\n    devices: ['/dev/sda:/dev/sda']\n",
    "host pid": "services:\n  main:\n    pid: host\n",
    "host ipc": "services:\n  main:\n    ipc: host\n",
    "host network": "services:\n  main:\n    network_mode: host\n",
    "seccomp off": "services:\n  main:\n    security_opt: ['seccomp=unconfined']\n",
    "ports": "services:\n  main:\n    ports: ['8080:80']\n",
    "secrets": "secrets:\n  s:\n    file: /etc/shadow\nservices:\n  main: {}\n",
    "env file": "services:\n  main:\n    env_file: /etc/environment\n",
    "include": "include: [/tmp/other.yaml]\nservices:\n  main: {}\n",
    "sidecar mount": (
        "services:\n  main: {}\n  db:\n    image: x\n    volumes: ['/var/run/docker.sock:/s']\n"
    ),
    "named volume": "services:\n  main:\n    volumes: [cache:/cache]\nvolumes:\n  cache: {}\n",
    "substitution": "services:\n  main: {}\n  db:\n    image: x\n    network_mode: ${N:-host}\n",
    "host env": "services:\n  main:\n    environment: [OPENAI_API_KEY]\n",
    "build network": ("services:\n  main: {}\n  db:\n    build: {context: ., network: host}\n"),
}


def test_compose_files_that_reach_the_host_are_refused(tmp_path: Path) -> None:
    cfg = compose_cfg()
    for name, text in HOSTILE_COMPOSE.items():
        d = tmp_path / name.replace(" ", "-")
        (d / "environment").mkdir(parents=True)
        (d / "environment/Dockerfile").write_text(f"FROM {BASE}\n")
        (d / "environment/docker-compose.yaml").write_text(text)
        errors = compose.check(d / "environment")
        assert errors, name
        with pytest.raises(runner.TaskRejected) as err:
            runner.stage([d], tmp_path / "staged", run="t", policy=runner.TrialPolicy.of(cfg))
        assert err.value.reasons[: len(errors)] == errors
    fine = tmp_path / "fine/environment"
    fine.mkdir(parents=True)
    (fine / "docker-compose.yaml").write_text(
        "services:\n  main:\n    init: true\n    network_mode: none\n    environment: [A=1]\n"
        "    depends_on: [db]\n"
        "  db:\n    image: postgres:16\n    environment: {POSTGRES_PASSWORD: x}\n"
        "    healthcheck: {test: [CMD, pg_isready], interval: 2s, retries: 5}\n"
    )
    parsed = compose.parse(fine)
    assert parsed.errors == []
    assert parsed.services["main"].environment == {"A": "1"}
    assert parsed.services["db"].healthcheck == {"test": ["CMD", "pg_isready"],
                                                 "interval_s": 2.0, "retries": 5}  # fmt: skip

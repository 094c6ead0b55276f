"""Environment synthesis: validated Harbor task dirs, failures recorded, escapes contained,
SIGKILL resume, no leftovers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from litecoder.envprep.capture import capture_state
from litecoder.envprep.prepare import split
from litecoder.harbor.compose import COMPOSE_NAMES
from litecoder.harbor.taskdir import check_copy_sources, check_task_toml, render_dockerfile
from litecoder.io import read_jsonl, write_records
from litecoder.records import JudgedTask
from litecoder.sandbox import ContainerLimits, Sandbox, build_image, docker_client, labels
from litecoder.standin import StandIn
from litecoder.standin import library as S
from litecoder.standin.server import MODEL_ID
from tests.conftest import (
    compose_cfg,
    litecoder_leftovers,
    make_project,
    point_offline_teacher,
    run,
)

pytestmark = pytest.mark.docker
BASE = "litecoder-base:bookworm"


def harbor_rewards(task_dir: Path, agent: str, jobs: Path) -> dict[str, float | None]:
    run(
        [
            "harbor",
            "run",
            "-p",
            str(task_dir),
            "-a",
            agent,
            "-n",
            "3",
            "-o",
            str(jobs),
            "--job-name",
            agent,
            "-q",
            "-y",
        ],
        task_dir.parent,
        timeout=1200,
    )
    out = {}
    for res in (jobs / agent).glob("*/result.json"):
        r = json.loads(res.read_text())
        out[r["task_name"]] = ((r.get("verifier_result") or {}).get("rewards") or {}).get("reward")
    return out


def test_smoke_builds_a_validated_environment_per_accepted_task(smoke: Path) -> None:
    accepted = {r["id"] for r in read_jsonl(smoke / "data/tasks/accepted.jsonl")}
    envs = smoke / "data/envs"
    assert {p.name for p in envs.iterdir() if p.is_dir()} == accepted
    assert read_jsonl(envs / "failed.jsonl") == []
    for tid in accepted:
        d = envs / tid
        assert check_task_toml(d / "task.toml") == []
        meta = tomllib.loads((d / "task.toml").read_text())["metadata"]["litecoder"]
        near = meta["checks"].pop("verifier_rejects_near_miss", True)  # when the agent wrote one
        assert near is True
        assert meta["checks"] == {
            "copy_sources": True,
            "build": True,
            "task_toml": True,
            "compose": True,
            "start_state_fails": True,
            "solution_passes": True,
            "verifier_deterministic": True,
            "verifier_rejects_reward_write": True,
            "verifier_rejects_test_edit": True,
            "harbor_oracle": 1.0,
        }
        assert check_copy_sources(d / "environment") == []
        # portable: no local image ids, only the named base image
        dockerfile = (d / "environment/Dockerfile").read_text()
        assert dockerfile.startswith(f"FROM {BASE}\n") and "sha256:" not in dockerfile
        # Only litecoder's own compose file, which cuts the network under a plain `harbor run`.
        compose = yaml.safe_load((d / "environment/docker-compose.yaml").read_text())
        assert compose == {"services": {"main": {"network_mode": "none"}}}
        assert tomllib.loads((d / "task.toml").read_text())["environment"]["network_mode"] == (
            "no-network"
        )
    splits = json.loads((envs / "splits.json").read_text())
    assert sorted(splits["train"] + splits["heldout"]) == sorted(accepted)
    assert 1 <= len(splits["heldout"]) < len(accepted)
    m = json.loads((smoke / "metrics/envprep.json").read_text())
    assert m["environments"] == len(accepted) and m["failed"] == 0
    assert all(c["rate"] == 1.0 for c in m["checks"].values())
    for t in m["per_task"].values():
        assert t["total_s"] >= t["validation_s"] > 0 and t["build_s"] > 0
        # Three agent steps (setup, solution, verifier) each started and removed a sandbox.
        assert 0 < t["sandbox_s"] < t["total_s"] - t["validation_s"]


def _open_harbors_policy_offline(tasks: Path, probe_dir: Path) -> None:
    """Harbor cannot cut the network itself on a host without its egress-control images
    (offline) and refuses tasks that declare no network, as it should. Their compose file
    (litecoder's) cuts the network anyway: with Harbor's own policy opened they run unchanged
    otherwise."""
    from litecoder.harbor.taskdir import set_network_mode

    probe = run(
        ["harbor", "run", "-p", str(next(p for p in tasks.iterdir())), "-a", "nop", "-o",
         str(probe_dir), "-q", "-y"],
        probe_dir.parent, check=False, timeout=600,
    )  # fmt: skip
    if "network_mode='no-network' is not supported" in probe.stdout + probe.stderr:
        for d in tasks.iterdir():
            set_network_mode(d / "task.toml", "public")


def test_copied_environments_run_unchanged_with_harbor(smoke: Path, tmp_path: Path) -> None:
    """Elsewhere on disk, `harbor run -a oracle` solves each task and `-a nop` solves none.
    The tasks declare what their compose file enforces: no network. (Four of them: the layout
    is the same for all, and envprep's own oracle check already ran every one.)"""
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for d in sorted(d for d in (smoke / "data/envs").iterdir() if d.is_dir())[:4]:
        shutil.copytree(d, copy / d.name)
        toml = tomllib.loads((copy / d.name / "task.toml").read_text())
        assert toml["environment"]["network_mode"] == "no-network"
    _open_harbors_policy_offline(copy, tmp_path / "probe")
    oracle = harbor_rewards(copy, "oracle", tmp_path / "jobs")
    nop = harbor_rewards(copy, "nop", tmp_path / "jobs")
    names = {d.name for d in copy.iterdir()}
    assert oracle == dict.fromkeys(names, 1.0)
    assert nop == dict.fromkeys(names, 0.0)


def _project_with_tasks(tmp_path: Path, scenarios: list[S.Scenario]) -> Path:
    project = make_project(tmp_path / "p", git=False)
    recs = [
        JudgedTask(
            id=f"t-{s.id.replace('_', '-')}",
            domain="version_control",
            subtopic="x",
            task=s.task,
            teacher="test",
            model="test",
            mode="chat",
            template="chat",
            seed=0,
            outcome="ok",
            accepted=True,
        )
        for s in scenarios
    ]
    write_records(project / "data/tasks/accepted.jsonl", recs)
    return project


FAST = [
    "tracking=disabled",
    "envprep.validate.harbor_oracle=false",
    "envprep.concurrency=3",
    "envprep.sandbox.command_timeout_s=5",
    "envprep.sandbox.memory_mb=256",
    "envprep.sandbox.pids=96",
]


def test_failures_are_recorded_and_the_stage_goes_on(tmp_path: Path) -> None:
    by_id = S.scenarios()
    scen = [
        S.by_id("ds_csv_clean"),
        by_id["verifier_passes_at_start"],
        by_id["solution_fails"],
        by_id["weak_verifier"],
        *(
            by_id[n]
            for n in (
                "escape_mount",
                "escape_docker_socket",
                "escape_fork_bomb",
                "escape_memory",
                "escape_sleep",
            )
        ),
    ]
    project = _project_with_tasks(tmp_path, scen)
    run(["litecoder", "envprep", *FAST], project, timeout=900)
    failed = {f["task_id"]: f for f in read_jsonl(project / "data/envs/failed.jsonl")}
    assert (project / "data/envs/t-ds-csv-clean/task.toml").exists()  # the good one is built
    expect = {
        "t-verifier-passes-at-start": ("validate:start_state_fails", "passes on the untouched"),
        "t-solution-fails": ("validate:solution_passes", "reward 0.0 after solve.sh"),
        # Its near miss (written by the agent) passes an existence-only verifier.
        "t-weak-verifier": ("validate:verifier_strength", "weak verifier (rejects_near_miss)"),
        "t-escape-mount": ("setup", "reach the host: mounts the host root"),
        "t-escape-docker-socket": ("setup", "reach the host: uses the Docker socket"),
        "t-escape-fork-bomb": ("setup", "process limit reached"),
        "t-escape-memory": ("setup", "out of memory"),
        "t-escape-sleep": ("setup", "timed out"),
    }
    assert set(failed) == set(expect)
    for tid, (step, why) in expect.items():
        assert failed[tid]["step"] == step, failed[tid]
        assert why in failed[tid]["reason"], failed[tid]
    assert litecoder_leftovers()["containers"] == []
    assert subprocess.run(["true"]).returncode == 0  # the host is fine


def _canary() -> dict[str, tuple[str, int]]:
    root = Path(S.HOST_CANARY)
    return {str(p): (p.read_text(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _unsafe_files(root: Path) -> list[str]:
    bad = []
    for p in root.rglob("*"):
        st = p.lstat()
        if p.is_symlink():
            target = os.path.normpath(os.path.join(p.parent, os.readlink(p)))
            if os.readlink(p).startswith("/") or not target.startswith(str(root)):
                bad.append(f"{p}: escaping link")
        elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            bad.append(f"{p}: special file")
        elif stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            bad.append(f"{p}: privilege bits")
    return bad


def test_hostile_setup_commands_are_contained_and_recorded(tmp_path: Path) -> None:
    """A disk fill, a 1 GB output flood, a setsid escapee, setuid binaries, device nodes, FIFOs,
    links to the host and a link swapped in while the state is captured: the host is
    unchanged, nothing privileged or escaping lands in the environment, and every task's
    outcome says what the sandbox did."""
    canary = Path(S.HOST_CANARY)
    canary.mkdir(exist_ok=True)
    (canary / "keep.txt").write_text("host\n")
    before = _canary()
    free_before = shutil.disk_usage("/").free
    by_id = S.scenarios()
    names = [
        "escape_disk_fill",
        "hostile_output_flood",
        "hostile_setsid",
        "hostile_privileged_files",
        "hostile_symlink_swap",
    ]
    project = _project_with_tasks(tmp_path, [by_id[n] for n in names])
    run(
        # Time enough for a 1 GB flood on a slow machine: what is checked here is containment.
        [
            "litecoder",
            "envprep",
            *FAST,
            "envprep.sandbox.disk_mb=300",
            "envprep.sandbox.command_timeout_s=600",
        ],
        project,
        timeout=900,
    )
    out = {r["task_id"]: r for r in read_jsonl(project / "data/envs/outcomes.jsonl")}
    assert out["t-escape-disk-fill"]["step"] == "setup"
    assert "disk limit reached" in out["t-escape-disk-fill"]["reason"]
    for n in names[1:]:
        assert out[f"t-{n.replace('_', '-')}"]["status"] == "ok", out[f"t-{n.replace('_', '-')}"]
    events = {k: " | ".join(v["sandbox_events"]) for k, v in out.items()}
    assert "output was 1000000000 bytes" in events["t-hostile-output-flood"]
    assert "were stopped" in events["t-hostile-setsid"]
    assert "were stopped" in events["t-hostile-symlink-swap"]
    refused = {r["path"]: r["reason"] for r in out["t-hostile-privileged-files"]["capture_refused"]}
    assert refused["/app/rootsh"] == "setuid/setgid bit dropped (mode 4755)"
    assert refused["/app/notes.txt"] == "setuid/setgid bit dropped (mode 2755)"
    assert refused["/app/fifo"] == "FIFO not copied"
    envs = project / "data/envs"
    assert _unsafe_files(envs) == []
    assert os.readlink(envs / "t-hostile-privileged-files/environment/files/app/rootlink") == ".."
    assert not (envs / "t-hostile-privileged-files/environment/files/app/disk").exists()
    assert _canary() == before  # nothing written through a link to the host
    assert free_before - shutil.disk_usage("/").free < 2 * 2**30
    m = json.loads((project / "metrics/envprep.json").read_text())
    assert m["capture_refused"] >= 3 and m["sandbox_events"] >= 3
    assert litecoder_leftovers()["containers"] == []


def test_agent_written_compose_file_never_lands(tmp_path: Path) -> None:
    by_id = S.scenarios()
    project = _project_with_tasks(tmp_path, [by_id["hostile_compose"]])
    run(["litecoder", "envprep", "envprep.mode=dockerfile", *FAST], project, timeout=900)
    out = read_jsonl(project / "data/envs/outcomes.jsonl")[0]
    assert out["status"] == "ok", out
    assert any("docker-compose.yaml refused" in e for e in out["sandbox_events"])
    env = project / "data/envs/t-hostile-compose/environment"
    assert [n for n in COMPOSE_NAMES if (env / n).exists()] == ["docker-compose.yaml"]
    assert yaml.safe_load((env / "docker-compose.yaml").read_text()) == {
        "services": {"main": {"network_mode": "none"}}
    }


def test_dockerfile_mode_catches_missing_copy_sources_and_failing_builds(tmp_path: Path) -> None:
    by_id = S.scenarios()
    project = _project_with_tasks(
        tmp_path, [S.by_id("sa_cache_cleanup"), by_id["broken_copy"], by_id["broken_build"]]
    )
    run(["litecoder", "envprep", "envprep.mode=dockerfile", *FAST], project, timeout=900)
    failed = {f["task_id"]: f for f in read_jsonl(project / "data/envs/failed.jsonl")}
    assert failed["t-broken-copy"]["step"] == "validate:copy_sources"
    assert (
        "'data/input.csv' does not exist in the build context" in failed["t-broken-copy"]["reason"]
    )
    assert failed["t-broken-build"]["step"] == "validate:build"
    assert "No module named 'numpy'" in failed["t-broken-build"]["reason"]
    good = project / "data/envs/t-sa-cache-cleanup"
    assert (good / "environment/setup.sh").exists() and set(failed) == {
        "t-broken-copy",
        "t-broken-build",
    }
    meta = tomllib.loads((good / "task.toml").read_text())["metadata"]["litecoder"]
    assert meta["mode"] == "dockerfile" and meta["checks"]["solution_passes"] is True


def test_killed_envprep_resumes_without_repeating_work(tmp_path: Path) -> None:
    project = _project_with_tasks(
        tmp_path,
        [
            S.by_id("ml_metrics"),
            S.by_id("net_port_conflict"),
            S.by_id("sec_checksums"),
        ],
    )
    with StandIn() as server:
        point_offline_teacher(project, server.base_url)
        cmd = [
            "litecoder",
            "envprep",
            "envprep.concurrency=1",
            "envprep.validate.harbor_oracle=false",
        ]
        proc = subprocess.Popen(
            cmd,
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        work = project / ".litecoder/envprep"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not list(work.glob("*/outcome.json")):
            time.sleep(0.2)
        time.sleep(2)  # into the next task: its containers are running when the kill comes
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        finished = {p: p.stat().st_mtime_ns for p in work.glob("*/outcome.json")}
        assert 1 <= len(finished) < 3
        before = server.stats()["by_key"]

        run(cmd, project, timeout=900)
        after = server.stats()["by_key"]
    m = json.loads((project / "metrics/envprep.json").read_text())
    assert m["environments"] == 3 and m["failed"] == 0
    # Finished tasks were not redone; the interrupted one left no half-written entry.
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    assert not list(work.glob(".tmp-*"))
    # No request answered before the kill was sent again, except the one in flight.
    repeated = [k for k, n in after.items() if n > 1]
    assert len(repeated) <= 1 and set(repeated) <= set(before)
    assert litecoder_leftovers() == {"containers": [], "dangling_images": []}


def test_capture_keeps_modes_mtimes_owners_links_and_deletions(tmp_path: Path) -> None:
    cfg = compose_cfg()
    lim = ContainerLimits(memory_mb=256, command_timeout_s=30)
    with Sandbox(BASE, lim, labels("test-capture", "t", "scratch")) as sb:
        sb.exec(
            "set -e; mkdir -p /app/sub /app/empty /srv/data; echo hi > /app/sub/a.txt;"
            "chmod 640 /app/sub/a.txt; touch -d @1600000000 /app/sub/a.txt;"
            "ln -s sub/a.txt /app/link; useradd -m alice; echo x > /srv/data/own;"
            "chown alice /srv/data/own; chmod 4755 /srv/data/own; rm /etc/motd;"
            "mkdir -p /tmp/noise && echo n > /tmp/noise/x"
        )
        state = capture_state(sb, cfg.envprep.capture, tmp_path / "environment")
    assert "/etc/motd" in state.deleted and "/app/empty" in state.empty_dirs
    assert not (tmp_path / "environment/files/tmp").exists()
    # The setuid bit is never copied: it is dropped and reported.
    assert {"path": "/srv/data/own", "reason": "setuid/setgid bit dropped (mode 4755)"} in (
        state.refused
    )
    (tmp_path / "environment/Dockerfile").write_text(
        render_dockerfile(cfg.envprep.base_image, workdir="/app", **state.dockerfile_state())
    )
    client = docker_client()
    tag = "litecoder-test/capture:1"
    build_image(client, tmp_path / "environment", tag, labels("test-capture", "t", "check"), 300)
    try:
        with Sandbox(tag, lim, labels("test-capture", "t", "check")) as sb:
            out = sb.exec(
                "stat -c '%a %Y' /app/sub/a.txt; readlink /app/link;"
                "test -d /app/empty && echo empty; stat -c '%U %a' /srv/data/own;"
                "test -e /etc/motd || echo nomotd; id alice >/dev/null && echo alice"
            ).output
    finally:
        client.images.remove(tag, force=True)
    assert out.split("\n")[:6] == [
        "640 1600000000",
        "sub/a.txt",
        "empty",
        "alice 755",
        "nomotd",
        "alice",
    ]


def test_static_checks(tmp_path: Path) -> None:
    env = tmp_path / "environment"
    (env / "data").mkdir(parents=True)
    (env / "data/a.csv").write_text("x")
    (env / "Dockerfile").write_text(
        "FROM x\n# COPY nothing.txt /\nCOPY data/a.csv /app/\n"
        'COPY --chown=1:1 ["data/*.csv", "/b/"]\n'
        "COPY --from=builder /out /out\nADD https://example.com/f /f\nCOPY \\\n  missing.txt /m\n"
    )
    assert check_copy_sources(env) == [
        "ADD 'https://example.com/f' fetches from the network while the image builds "
        "(put the file in the build context instead)",
        "COPY source 'missing.txt' does not exist in the build context",
    ]
    cfg = compose_cfg()
    toml = tmp_path / "task.toml"
    toml.write_text("[environment]\ncpus = 1\nmemroy_mb = 3\n[agent]\ntimeout_sec = 5\n")
    errs = check_task_toml(toml, cfg.envprep.task)
    assert "task.toml: unknown key environment.memroy_mb" in errs
    assert any("agent.timeout_sec is 5.0, config says 900.0" in e for e in errs)
    toml.write_text("not = [toml")
    assert check_task_toml(toml)[0].startswith("task.toml does not parse")


def test_split_is_stable() -> None:
    ids = [f"t-{i}" for i in range(10)]
    a = split(ids, 0.2)
    assert a == split(list(reversed(ids)), 0.2) and len(a.heldout) == 2
    assert split(["t-1"], 0.2).model_dump() == {"train": ["t-1"], "heldout": []}
    assert MODEL_ID


def _envs_digest(project: Path) -> dict[str, Any]:
    """data/envs as content: every task dir, the splits and the per-task outcomes (timings,
    which differ run to run, left out)."""
    from litecoder.harbor.taskdir import content_hash

    envs = project / "data/envs"
    outcomes = [
        {k: v for k, v in r.items() if k not in ("timings",)}
        for r in read_jsonl(envs / "outcomes.jsonl")
    ]
    return {
        "dirs": {d.name: content_hash(d) for d in sorted(envs.iterdir()) if d.is_dir()},
        "splits": json.loads((envs / "splits.json").read_text()),
        "outcomes": outcomes,
    }


@pytest.mark.cluster
def test_sharded_envprep_equals_an_unsharded_run(tmp_path: Path) -> None:
    scenarios = [S.by_id("ml_metrics"), S.by_id("sec_checksums"), S.by_id("bt_zipapp")]
    one = _project_with_tasks(tmp_path / "one", scenarios)
    sharded = _project_with_tasks(tmp_path / "sharded", scenarios)
    base = ["litecoder", "envprep", "envprep.validate.harbor_oracle=false"]
    with StandIn() as server:
        for p in (one, sharded):
            point_offline_teacher(p, server.base_url)
        run(base, one, timeout=900)
        # Two shards side by side (as a launcher would run them), then the assembly.
        procs = [
            subprocess.Popen([*base, f"envprep.shard={i}/2"], cwd=sharded,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for i in range(2)
        ]  # fmt: skip
        for p in procs:
            _, err = p.communicate(timeout=900)
            assert p.returncode == 0, err[-2000:]
        assert not (sharded / "data/envs").exists()  # shards only fill the work area
        requests = server.stats()["received"]
        run(base, sharded, timeout=900)
        assert server.stats()["received"] == requests  # the assembly redid nothing
    assert _envs_digest(sharded) == _envs_digest(one)
    assert len(list((sharded / ".litecoder/envprep").glob("*/outcome.json"))) == 3


def test_calibration_and_the_harbor_dataset_export(smoke: Path, tmp_path: Path) -> None:
    """The smoke's calibration: one attempt per training environment by the solver; every
    environment has its pass rate (the stand-in solves or fails a scenario the same way
    each time); data/export/ is a Harbor dataset dir whose tasks carry their calibration,
    listed in manifest.json with verifier strength and provenance, and run with Harbor as
    they are."""
    splits = json.loads((smoke / "data/envs/splits.json").read_text())
    rates = json.loads((smoke / "data/calibration/pass_rates.json").read_text())
    assert set(rates["tasks"]) == set(splits["train"])
    assert all(r["attempts"] == 1 and r["pass_rate"] in (0.0, 1.0)
               for r in rates["tasks"].values())  # fmt: skip
    m = json.loads((smoke / "metrics/calibrate.json").read_text())
    assert sum(m["pass_rate_bins"].values()) == m["calibrated"] == len(splits["train"])
    assert m["in_band"] == 0  # 0 or 1, never between: nothing an RL learner could use
    export = smoke / "data/export"
    manifest = json.loads((export / "manifest.json").read_text())
    assert {t["name"] for t in manifest["tasks"]} == set(splits["train"])
    for t in manifest["tasks"]:
        assert t["pass_rate"] == rates["tasks"][t["name"]]["pass_rate"]
        assert t["verifier"]["deterministic"] is True and t["provenance"]["domain"]
        meta = tomllib.loads((export / t["path"] / "task.toml").read_text())["metadata"]
        assert meta["litecoder"]["calibration"]["pass_rate"] == t["pass_rate"]
    assert "## Difficulty" in (smoke / "reports/smoke.md").read_text()
    one = export / manifest["tasks"][0]["path"]
    shutil.copytree(one, tmp_path / "ds" / one.name)
    _open_harbors_policy_offline(tmp_path / "ds", tmp_path / "probe")
    assert harbor_rewards(tmp_path / "ds", "oracle", tmp_path / "jobs") == {one.name: 1.0}

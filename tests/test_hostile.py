"""Hostile task dirs through every way litecoder runs outside tasks: `litecoder validate
--oracle`, an external rollout task set and evaluate on a path (tests/hostile_tasks.py has one
task per way a trial reached the host). Nothing may be written or read on the host outside the
job dirs, no canary secret may reach a container or an output, a forged reward stays 0, disk
use stays within the copy-out caps, and litecoder's and Harbor's memory stay bounded (the
kernel's peak-RSS counter of the whole process tree, not timing)."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import hostile_tasks as H
from tests.conftest import REPO, litecoder_leftovers, make_project, point_offline_teacher
from tests.loopback_api import ScriptedAPI

pytestmark = pytest.mark.docker
MAX_FILE = 64 * 2**20  # security.copy_out.max_file_mb
MAX_RSS_KB = 1536 * 1024  # the largest process of the run: Harbor, litecoder or a helper
LOG_CAP = 10 * 2**20  # security.log_max_mb


def _host_addresses() -> tuple[str, ...]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    addrs = {line.split()[3].split("/")[0] for line in out.splitlines() if " inet " in line}
    return tuple(sorted(a for a in addrs if not a.startswith("127.")))


class _Listener(http.server.ThreadingHTTPServer):
    hits = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"host secret")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H.Host]:
    canary = "canary-" + secrets.token_hex(12)
    d = Path(f"/tmp/litecoder-hostile-{os.getpid()}")
    d.mkdir(exist_ok=True)
    (d / "secret.txt").write_text(canary + "\n")
    (d / ".env").write_text(f"{H.CANARY_VAR}={canary}\n")
    server = _Listener(("0.0.0.0", 0), _Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield H.Host(
            secret_file=d / "secret.txt",
            canary=canary,
            dir=d,
            listener=f"http://127.0.0.1:{port}",
            addresses=_host_addresses(),
            port=port,
        )
    finally:
        server.shutdown()
        assert server.hits == 0, "a container or a build reached a host service"
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


@pytest.fixture(scope="module")
def hostile(host: H.Host, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.build(tmp_path_factory.mktemp("hostile") / "tasks", host)


def _measured(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[Any, int]:
    """Run `cmd`; also the kernel's peak RSS (KiB) of the largest process of its tree."""
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
        "file=sys.stderr); sys.exit(r.returncode)"
    )
    r = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    line = [x for x in r.stderr.splitlines() if x.startswith("MAXRSS ")][-1]
    return r, int(line.split()[1])


def _secret_env(host: H.Host) -> dict[str, str]:
    # The canary is in litecoder's own environment, as a key would be.
    return {H.CANARY_VAR: host.canary, "OPENAI_API_KEY": host.canary}


def _assert_contained(host: H.Host, dirs: list[Path], maxrss_kb: int) -> None:
    """The host is as it was, and what the trials brought out is bounded and canary-free."""
    assert sorted(p.name for p in host.dir.iterdir()) == [".env", "secret.txt"]
    assert host.secret_file.read_text() == host.canary + "\n"
    total = 0
    needle = host.canary.encode()
    for d in dirs:
        for p in d.rglob("*"):
            if p.is_symlink() or not p.is_file():
                continue
            size = p.stat().st_size
            assert size <= MAX_FILE, (p, size)
            total += p.stat().st_blocks * 512
            with p.open("rb") as f:
                while chunk := f.read(1 << 20):
                    assert needle not in chunk, f"the canary is in {p}"
    assert total < 1024 * 2**20, total
    assert maxrss_kb < MAX_RSS_KB, f"peak RSS {maxrss_kb} KiB"
    assert litecoder_leftovers()["containers"] == []


def _reports(job_dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """Each trial's litecoder.json, by task name."""
    out = {}
    for job in job_dirs:
        for trial in job.iterdir():
            if (trial / "result.json").is_file():
                task = json.loads((trial / "result.json").read_text())["task_name"]
                out[task] = json.loads((trial / "litecoder.json").read_text())
    return out


def _check_reports(reports: dict[str, dict[str, Any]], *, agent: bool) -> None:
    assert set(reports) == set(H.RUNNABLE)
    sparse = reports["sparse-log"]["sanitized"]
    assert any("sparse" in r["path"] and "bytes" in r["reason"] for r in sparse), sparse
    flood = reports["log-flood"]["environment"]["log_bytes"]["main"]
    assert flood <= LOG_CAP + 2**20, flood
    if agent:  # the agent left a process in every trial; the verifier never met it
        for name, rep in reports.items():
            assert rep["environment"]["processes_killed_before_verifier"] >= 1, name
    else:
        assert reports["escapee"]["environment"]["processes_killed_before_verifier"] >= 1
    big = reports["big-reward"]["sanitized"]
    assert any(r["path"].endswith("reward.txt") and "cap" in r["reason"] for r in big), big
    link = reports["reward-link"]["sanitized"]
    assert any(r["path"].endswith("reward.txt") and "link" in r["reason"] for r in link), link
    assert reports["big-output"]["environment"]["outputs_truncated"] >= 1


def test_validate_oracle(hostile: Path, host: H.Host, tmp_path: Path) -> None:
    work = tmp_path / "work"
    r, rss = _measured(
        ["litecoder", "validate", "--oracle", "--json", "--work", str(work), str(hostile)],
        tmp_path,
        _secret_env(host),
        timeout=2400,
    )
    assert r.returncode == 1, r.stderr[-3000:]  # the hostile ones fail, by name
    reports = {json.loads(x)["task"]: json.loads(x) for x in r.stdout.splitlines() if x.strip()}
    for name, check in H.STATIC.items():
        checks = {f["check"] for f in reports[name]["findings"] if f["severity"] == "error"}
        assert check in checks, (name, reports[name]["findings"])
        assert not (work / "staged" / name).exists()  # never built, never run
    for name, reward in H.RUNNABLE.items():
        errors = [f for f in reports[name]["findings"] if f["severity"] == "error"]
        assert all(f["check"] == "oracle" for f in errors), (name, errors)
        oracle = [f["problem"] for f in errors]
        if reward == 1.0:
            assert not oracle, (name, reports[name]["findings"])
        else:
            assert oracle and f"reward {reward}" in oracle[0], (name, oracle)
    _check_reports(_reports([work / "jobs/oracle"]), agent=False)
    _assert_contained(host, [work / "jobs"], rss)


def _hostile_agent(n: int, body: dict[str, Any]) -> list[tuple[Any, ...]]:
    turns = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
    return [("ok", H.agent_turn(turns))]


def test_external_rollout_task_set(hostile: Path, host: H.Host, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", git=False)
    with ScriptedAPI(script=_hostile_agent, models=["litecoder-offline-stand-in"]) as api:
        point_offline_teacher(project, api.base_url)
        cmd = [
            "litecoder", "rollout", "rollout=terminus2", "rollout.n_attempts=1",
            "rollout.use_envs=false", "rollout.n_concurrent=4",
            f"rollout.external=[{{name: hostile, source: path, path: {hostile}}}]",
        ]  # fmt: skip
        r, rss = _measured(cmd, project, _secret_env(host), timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((project / "metrics/rollout.json").read_text())
    rejected = {x["task"]: x for x in m["external_rejected"]["hostile"]}
    assert set(rejected) == set(H.STATIC)
    for name, check in H.STATIC.items():
        assert check in {f["check"] for f in rejected[name]["findings"]}, rejected[name]
    assert m["trials"] == len(H.RUNNABLE)
    rewards = {}
    for result in (project / "data/rollouts").glob("*/*/result.json"):
        res = json.loads(result.read_text())
        rewards[res["task_name"]] = ((res.get("verifier_result") or {}).get("rewards") or {}).get(
            "reward"
        )
    # The agent never solves; its escapee writes reward 1 in every trial: all 0 (or none).
    assert all(v in (0, 0.0, None) for v in rewards.values()), rewards
    assert rewards["escapee"] == 0.0 and rewards["reward-link"] is None
    _check_reports(_reports(list((project / "data/rollouts").iterdir())), agent=True)
    _assert_contained(host, [project / "data", project / ".litecoder/rollout/jobs"], rss)


def test_evaluate_on_a_path(hostile: Path, host: H.Host, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", git=False)
    with ScriptedAPI(script=_hostile_agent, models=["hostile-agent"]) as api:
        cmd = [
            "litecoder", "evaluate", "eval=harbor_dataset", "tracking=disabled",
            "eval.benchmark=hostile", "eval.source=path", f"eval.path={hostile}",
            "eval.network=false", "eval.k=1", "eval.n_concurrent=4",
            "eval.model.source=endpoint", f"eval.model.base_url={api.base_url}",
            "eval.model.name=hostile-agent", "eval.model.label=hostile",
            "eval.agents=[{name: terminus-2, kwargs: {parser_name: json, max_turns: 8}}]",
            # Some hostile verifiers cannot produce a reward at all (the link is refused):
            # those trials are infrastructure errors, counted apart, not a stage failure here.
            "eval.max_unfinished_fraction=1",
        ]  # fmt: skip
        r, rss = _measured(cmd, project, _secret_env(host), timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((project / "results/hostile.json").read_text())
    assert set(res["refused"]) == set(H.STATIC)
    per_task = res["per_task"]["hostile"]
    (model,) = res["models"].values()
    # The tasks whose verifier cannot give a reward are the unfinished ones.
    assert set(per_task) == {t for t, v in H.RUNNABLE.items() if v is not None}, per_task
    assert model["unfinished"] == len(H.RUNNABLE) - len(per_task), model
    assert set(model["unfinished_by_type"]) == {"RewardFileNotFoundError"}, model
    assert all(v["rewards"] in ([0.0], [None], []) for v in per_task.values()), per_task
    _check_reports(_reports(list((project / "results/hostile/jobs").iterdir())), agent=True)
    _assert_contained(host, [project / "results", project / ".litecoder/evaluate/jobs"], rss)


def test_exec_output_is_bounded_in_memory(tmp_path: Path) -> None:
    """1 GB on a trial command's stdout: what comes back is the configured head and tail, and
    the process that ran it stayed small (its kernel peak-RSS counter)."""
    from litecoder.sandbox import labels
    from litecoder.sandbox.trial import Service, TrialSpec

    spec = TrialSpec(
        services={"main": Service(image=H.BASE, memory_mb=256, cpus=1)},
        capabilities=["CHOWN", "SETUID", "SETGID", "DAC_OVERRIDE", "FOWNER", "KILL"],
        pids=128,
        labels=labels("exec-bound", None, "trial"),
        output_bytes=64 * 1024,
    )
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    code = (
        "import json, resource, sys\n"
        "from litecoder.sandbox.trial import TrialContainers, TrialSpec\n"
        f"spec = TrialSpec.model_validate_json(open({str(tmp_path / 'spec.json')!r}).read())\n"
        "box = TrialContainers(spec, 'exec-bound')\n"
        "box.start()\n"
        "try:\n"
        "    r = box.exec('yes | head -c 1000000000; echo; echo END', timeout_s=600)\n"
        "finally:\n"
        "    box.stop()\n"
        "print(json.dumps({'len': len(r.output), 'bytes': r.output_bytes, 'cut': r.truncated,\n"
        "    'end': r.output.rstrip().endswith('END'), 'code': r.code,\n"
        "    'rss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout.splitlines()[-1])
    assert got["code"] == 0 and got["cut"] and got["end"], got
    assert got["bytes"] > 10**9 and got["len"] < 70 * 1024, got
    assert got["rss_kb"] < 400 * 1024, got

"""Stages against endpoints that fail the way hosted ones do: outages are waited out, garbage
fails the stage honestly (no DVC lock) and a later run redoes only what failed, and an
endpoint that cannot work at all is named in seconds. All real HTTP on loopback."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from litecoder.io import read_jsonl
from litecoder.standin import StandIn
from tests.conftest import make_project, point_offline_teacher, run
from tests.flaky_proxy import FlakyProxy


def _git(project: Path) -> None:
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "hydra.enabled", "True"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "init"],
    ):
        run(cmd, project)


def test_outages_are_waited_out(tmp_path: Path) -> None:
    """429 with Retry-After for 30 s while sampling (one project), refused connections for 30 s
    while judging (another, side by side): `dvc repro` finishes, every record a real result,
    exit 0."""
    with StandIn() as server, FlakyProxy(server.base_url) as p1, FlakyProxy(server.base_url) as p2:
        p1.set(outages=[("/completions", 4, "429", 30)])  # sample: raw completions
        p2.set(outages=[("/chat/completions", 4, "refused", 30)])  # judge: chat
        projects = []
        for name, proxy in (("a", p1), ("b", p2)):
            project = make_project(tmp_path / name, git=False)
            point_offline_teacher(project, proxy.base_url)
            _git(project)
            projects.append(project)
        start = time.monotonic()
        procs = [
            subprocess.Popen(["dvc", "repro", "judge"], cwd=p, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
            for p in projects
        ]  # fmt: skip
        for proc in procs:
            _, err = proc.communicate(timeout=900)
            assert proc.returncode == 0, err[-3000:]
        took = time.monotonic() - start
    assert took >= 30  # the outages were really waited out
    for project, hit in zip(projects, ("sample", "judge"), strict=True):
        sampled = read_jsonl(project / "data/tasks/sampled.jsonl")
        judged = read_jsonl(project / "data/tasks/judged.jsonl")
        assert len(sampled) == 14 and all(r["outcome"] == "ok" for r in sampled)
        assert all(r["judge"]["outcome"] == "ok" for r in judged)
        waited = json.loads((project / f"metrics/{hit}.json").read_text())["llm"]["total"]
        assert waited["waited_outage_s"] > 0 and waited["errors"] == 0, (hit, waited)
        status = run(["dvc", "status", "judge"], project).stdout
        assert "up to date" in status  # both stages are locked


def test_garbage_fails_honestly_and_a_rerun_redoes_only_the_rest(tmp_path: Path) -> None:
    with StandIn() as server, FlakyProxy(server.base_url) as proxy:
        project = make_project(tmp_path / "p", git=False)
        point_offline_teacher(project, proxy.base_url)
        run(["litecoder", "params", "sampler.n_tasks=7", "models.sample.max_wait_s=8"], project)
        _git(project)
        run(["dvc", "repro", "sample"], project)
        first = (project / "data/tasks/sampled.jsonl").read_text()

        # More tasks, but the endpoint now answers garbage: a clear failure, no lock.
        run(["litecoder", "params", "sampler.n_tasks=14"], project)
        proxy.set(mode="garbage")
        start = time.monotonic()
        r = run(["dvc", "repro", "sample"], project, check=False)
        # Given up on its 8 s budget, not on the stage's default of minutes (the margin is
        # for a loaded machine: only the budget is being checked).
        assert r.returncode != 0 and time.monotonic() - start < 8 + 240
        line = next(ln for ln in r.stderr.splitlines() if ln.startswith("error: "))
        assert "7 of 14 records failed on the endpoint" in line
        assert "not an OpenAI response" in line and "Traceback" not in r.stderr
        assert "sample" in run(["dvc", "status"], project).stdout  # not locked
        again = read_jsonl(project / "data/tasks/sampled.jsonl")
        assert [r for r in again if r["outcome"] == "ok"] == [
            json.loads(x) for x in first.splitlines()
        ]  # the finished records are unchanged

        # The endpoint is good again: only the missing requests are made.
        proxy.set(mode="pass")
        before = server.stats()["answered"]
        run(["dvc", "repro", "sample"], project)
        assert server.stats()["answered"] - before == 7
    recs = read_jsonl(project / "data/tasks/sampled.jsonl")
    assert len(recs) == 14 and all(r["outcome"] == "ok" for r in recs)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("wrong_port", "connection refused"),
        ("wrong_path", "not an OpenAI-compatible server"),
        ("not_openai", "not an OpenAI-compatible server"),
        ("bad_key", "refused the API key"),
        ("unknown_host", "cannot resolve the host name"),
    ],
)
def test_an_unusable_endpoint_fails_in_seconds(
    case: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import subprocess
    import sys

    project = make_project(tmp_path / "p", git=False)
    monkeypatch.setenv("LC_EP_KEY", "sk-right")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        other = s.getsockname()[1]
    # A real HTTP server that is not an OpenAI one.
    web = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(other), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with StandIn(api_key_env="LC_EP_KEY") as server:
        port = server.base_url.rsplit(":", 1)[1].split("/")[0]
        url = {
            "wrong_port": "http://127.0.0.1:1/v1",
            "wrong_path": f"http://127.0.0.1:{port}/api",
            "not_openai": f"http://127.0.0.1:{other}/v1",
            "bad_key": server.base_url,
            "unknown_host": "http://no-such-host.invalid/v1",
        }[case]
        key = "sk-wrong" if case == "bad_key" else "sk-right"
        start = time.monotonic()
        r = run(
            [
                "litecoder",
                "sample",
                "tracking=disabled",
                f"models.sample.base_url={url}",
                "models.sample.api_key_env=LC_EP_KEY",
                "models.sample.max_wait_s=3600",  # retrying would take an hour
            ],
            project,
            check=False,
            env={"LC_EP_KEY": key},
        )
        took = time.monotonic() - start
    web.terminate()
    # Not retried: a retry would wait out the hour's budget. The margin is for a loaded machine.
    assert r.returncode != 0 and took < 300
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, r.stderr[-500:]
    assert not (project / "data/tasks/sampled.jsonl").exists()

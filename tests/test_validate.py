"""`litecoder validate` on task dirs of our own making, one per defect, and on the smoke run's
environments."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, run

BASE = "litecoder-base:bookworm"
GOOD_TOML = """\
[metadata]
category = "test"

[verifier]
timeout_sec = 60.0

[agent]
timeout_sec = 120.0

[environment]
cpus = 1
memory_mb = 512
storage_mb = 1024
network_mode = "no-network"
"""
GOOD_TEST = "#!/bin/bash\nmkdir -p /logs/verifier\necho 1 > /logs/verifier/reward.txt\n"


def _task(root: Path, name: str) -> Path:
    d = root / name
    for sub in ("environment", "tests", "solution"):
        (d / sub).mkdir(parents=True)
    (d / "instruction.md").write_text("Do the thing in /app.\n")
    (d / "task.toml").write_text(GOOD_TOML)
    (d / "environment/Dockerfile").write_text(f"FROM {BASE}\nRUN mkdir -p /app\n")
    (d / "tests/test.sh").write_text(GOOD_TEST)
    (d / "solution/solve.sh").write_text("#!/bin/bash\ntrue\n")
    return d


# Each broken task: (name, how to break it, the check that must catch it, words of the finding)
DEFECTS = [
    ("test-time-uv", lambda d: (d / "tests/test.sh").write_text(
        "curl -LsSf https://astral.sh/uv/install.sh | sh\nuvx pytest /tests\n" + GOOD_TEST),
     "network", "download at test time"),
    ("allow-internet", lambda d: (d / "task.toml").write_text(
        GOOD_TOML + "allow_internet = true\n"), "network", "allow_internet"),
    ("private-registry", lambda d: ((d / "environment/Dockerfile").unlink(),
                                    (d / "task.toml").write_text(GOOD_TOML +
        'docker_image = "registry.corp.example:5000/team/env:1"\n')),
     "image", "private registry"),
    ("missing-copy-source", lambda d: (d / "environment/Dockerfile").write_text(
        f"FROM {BASE}\nCOPY data/input.csv /app/\n"), "copy_sources", "does not exist"),
    ("build-download", lambda d: (d / "environment/Dockerfile").write_text(
        f"FROM {BASE}\nRUN pip install requests\n"), "network", "while the image builds"),
    ("host-mount", lambda d: (d / "environment/docker-compose.yaml").write_text(
        "services:\n  main:\n    volumes: ['/:/host']\n"), "compose", "volumes: not supported"),
    ("privileged", lambda d: (d / "environment/docker-compose.yaml").write_text(
        "services:\n  main:\n    privileged: true\n"), "compose", "privileged"),
    ("no-reward", lambda d: (d / "tests/test.sh").write_text("#!/bin/bash\npytest /tests\n"),
     "reward", "never write"),
    ("missing-test-file", lambda d: (d / "tests/test.sh").write_text(
        GOOD_TEST + "python3 /tests/helper.py\n"), "test_files", "tests/ lacks"),
    ("escaping-link", lambda d: os.symlink("/etc/passwd", d / "tests/leak"), "links",
     "links outside"),
    ("bad-toml", lambda d: (d / "task.toml").write_text(GOOD_TOML + "[agnet]\nx = 1\n"),
     "task_toml", "unknown key"),
    ("no-instruction", lambda d: (d / "instruction.md").unlink(), "layout", "instruction.md"),
    # Malformed files: each a finding of its own task, never an abort of the whole run.
    ("non-utf8-dockerfile", lambda d: (d / "environment/Dockerfile").write_bytes(
        b"FROM litecoder-base:bookworm\nRUN echo \xff\xfe\n"), "dockerfile", "not UTF-8"),
    ("non-utf8-toml", lambda d: (d / "task.toml").write_bytes(
        GOOD_TOML.encode() + b"# \xff\n"), "task_toml", "UTF-8"),
    ("unclosed-copy-quote", lambda d: (d / "environment/Dockerfile").write_text(
        f'FROM {BASE}\nCOPY "data/in.csv /app/\n'), "copy_sources", "does not parse"),
    ("bare-from", lambda d: (d / "environment/Dockerfile").write_text("FROM\nRUN true\n"),
     "dockerfile", "FROM names no image"),
    ("bad-compose-yaml", lambda d: (d / "environment/docker-compose.yaml").write_text(
        "services:\n  main: [\n"), "compose", "YAML"),
    ("compose-services-list", lambda d: (d / "environment/docker-compose.yaml").write_text(
        "services:\n  - main\n"), "compose", "services"),
]  # fmt: skip


def test_each_defect_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    _task(root, "fine")
    for name, breaks, _, _ in DEFECTS:
        breaks(_task(root, name))
    r = run(["litecoder", "validate", str(root), "--json"], REPO, check=False)
    assert r.returncode == 1, r.stderr[-2000:]
    reports = {d["task"]: d for d in map(json.loads, r.stdout.splitlines())}
    assert reports["fine"]["ok"] is True and reports["fine"]["findings"] == []
    for name, _, check, words in DEFECTS:
        found = [f for f in reports[name]["findings"] if f["severity"] == "error"]
        assert not reports[name]["ok"], name
        assert any(f["check"] == check and words in f["problem"] for f in found), (name, found)
    # The table form says the same, and network needs can be allowed.
    table = run(["litecoder", "validate", str(root / "fine")], REPO)
    assert "1 of 1 task(s) pass" in table.stdout
    r = run(["litecoder", "validate", str(root / "test-time-uv"), "--allow-network"], REPO)
    assert r.returncode == 0
    # The run's error says "run with -v": -v is accepted.
    r = run(["litecoder", "validate", str(root / "bare-from"), "-v"], REPO, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.mark.docker
def test_the_smoke_environments_pass_every_check(smoke: Path, tmp_path: Path) -> None:
    envs = smoke / "data/envs"
    r = run(["litecoder", "validate", str(envs), "--json"], tmp_path)
    reports = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(reports) >= 5 and all(x["ok"] and not x["findings"] for x in reports), reports
    # The expensive checks, on one of them.
    one = sorted(p for p in envs.iterdir() if p.is_dir())[0]
    shutil.copytree(one, tmp_path / one.name)
    r = run(
        ["litecoder", "validate", str(tmp_path / one.name), "--build", "--start-state", "--oracle"],
        tmp_path,
        timeout=1200,
    )
    assert "1 of 1 task(s) pass" in r.stdout


# --- the verifier's strength ------------------------------------------------------------------

STRONG_TEST = """#!/bin/bash
mkdir -p /logs/verifier
cd /tests
python3 -m pytest -q -p no:cacheprovider --noconftest -c /dev/null --rootdir /tests \\
  test_outputs.py > /logs/verifier/pytest.log 2>&1 && echo 1 > /logs/verifier/reward.txt \\
  || echo 0 > /logs/verifier/reward.txt
"""
CHECK_OUT = 'def test_out():\n    assert open("/app/out.txt").read() == "hello 42\\n"\n'
SOLVE = "#!/bin/bash\nmkdir -p /app && echo 'hello 42' > /app/out.txt\n"
NEAR_MISS = "#!/bin/bash\nmkdir -p /app && echo 'hello 41' > /app/out.txt\n"

# One planted verifier defect per task: (name, test.sh, tests/test_outputs.py, the check).
WEAK = [
    # Writes its reward only on success: a reward written by the "solution" survives.
    ("weak-reward-write", STRONG_TEST.replace(" \\\n  || echo 0 > /logs/verifier/reward.txt", ""),
     CHECK_OUT, "rejects_reward_write"),
    # Runs pytest as it comes: a conftest.py planted in /tests passes everything.
    ("weak-test-edit", STRONG_TEST.replace("--noconftest -c /dev/null --rootdir /tests ", ""),
     CHECK_OUT, "rejects_test_edit"),
    # Checks that the file exists, not what it says: the near miss passes.
    ("weak-near-miss", STRONG_TEST,
     'import os\n\ndef test_out():\n    assert os.path.exists("/app/out.txt")\n',
     "rejects_near_miss"),
    # Passes once: the same end state verified twice gets 1, then 0.
    ("weak-flaky", STRONG_TEST, CHECK_OUT + 'import os\n\ndef test_once():\n'
     '    assert not os.path.exists("/tmp/seen")\n    open("/tmp/seen", "w").close()\n',
     "deterministic"),
]  # fmt: skip


@pytest.mark.docker
def test_weak_verifiers_are_flagged(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    for name, test_sh, test_py, _ in [("strong", STRONG_TEST, CHECK_OUT, ""), *WEAK]:
        d = _task(root, name)
        (d / "tests/test.sh").write_text(test_sh)
        (d / "tests/test_outputs.py").write_text(test_py)
        (d / "solution/solve.sh").write_text(SOLVE)
        (d / "solution/near_miss.sh").write_text(NEAR_MISS)
    r = run(["litecoder", "validate", "--verifier", "--json", str(root)], tmp_path,
            check=False, timeout=1800)  # fmt: skip
    assert r.returncode == 1, r.stderr[-2000:]
    reports = {d["task"]: d for d in map(json.loads, r.stdout.splitlines())}
    assert reports["strong"]["ok"], reports["strong"]
    for name, _, _, check in WEAK:
        found = [f["problem"] for f in reports[name]["findings"] if f["check"] == "verifier"]
        assert len(found) == 1 and f"({check})" in found[0], (name, reports[name]["findings"])

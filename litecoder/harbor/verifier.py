"""How strong a task's verifier is: can a solution that is not one get reward 1?

Each check runs in a fresh container of the task's image, the way Harbor's trial path runs a
task (the solution's commands, then the tests copied over `/tests`, then `tests/test.sh`),
and reads the reward the verifier left:

- `deterministic`: the reference solution's end state, verified twice, gets 1.0 both times;
- `rejects_reward_write`: a "solution" that only writes `reward.txt`/`reward.json` with 1
  does not get 1 (a verifier that writes its reward only on success would let it through);
- `rejects_test_edit`: a "solution" that plants a `conftest.py` in `/tests` (which makes
  every pytest test pass) does not get 1 (an overlay upload keeps the planted file);
- `rejects_near_miss`: a plausible wrong solution (`solution/near_miss.sh`, written by the
  environment agent) does not get 1.

litecoder's own trial environment empties `/tests` and `/logs/verifier` and kills every process
before a verifier runs, so these cannot fool its own trials; they matter to everyone else who
runs the task dirs (an RL trainer reading Harbor tasks), and a verifier that fails them is a
weak one. Results go to task.toml (`[metadata.litecoder.checks]`) and can be required.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FORGE_REWARD = (
    "mkdir -p /logs/verifier && echo 1 > /logs/verifier/reward.txt && "
    "printf '{\"reward\": 1}' > /logs/verifier/reward.json"
)
EDIT_TESTS = r"""mkdir -p /tests && cat > /tests/conftest.py <<'LITECODER_EOF'
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
    report.longrepr = None
LITECODER_EOF
"""
CHECKS = ("deterministic", "rejects_reward_write", "rejects_test_edit", "rejects_near_miss")


@dataclass
class Strength:
    deterministic: bool | None = None
    rejects_reward_write: bool | None = None
    rejects_test_edit: bool | None = None
    rejects_near_miss: bool | None = None  # None: no near miss to try
    notes: str = ""

    def failed(self, required: Sequence[str] = CHECKS) -> list[str]:
        return [c for c in required if getattr(self, c) is False]

    def to_checks(self) -> dict[str, bool | None]:
        return {f"verifier_{k}": v for k, v in asdict(self).items() if k != "notes"}


def read_reward(sandbox: Any) -> float | None:
    """The reward the verifier left (reward.txt, else reward.json's `reward`), read through
    the engine's archive API; None when there is none or it is not a number."""
    raw = sandbox.read_file("/logs/verifier/reward.txt", 4096)
    if raw is not None:
        try:
            return float(raw.decode(errors="replace").strip())
        except ValueError:
            return None
    raw = sandbox.read_file("/logs/verifier/reward.json", 65536)
    if raw is None:
        return None
    try:
        value = json.loads(raw).get("reward")
        return float(value) if value is not None else None
    except (ValueError, AttributeError, TypeError):
        return None


def verdicts(
    make_sandbox: Callable[[], Any],
    task_dir: Path,
    prepare: str | None,
    *,
    runs: int = 1,
    solve_timeout_s: float,
    verify_timeout_s: float,
    workdir: str,
) -> list[float | None]:
    """Rewards of `runs` verifier runs in one fresh container after `prepare` (bash)."""
    sb = make_sandbox()
    sb.start()
    try:
        if prepare is not None:
            sb.put_dir(task_dir / "solution", "/solution")
            sb.exec(prepare, solve_timeout_s, workdir)
        out: list[float | None] = []
        for _ in range(runs):
            sb.exec("rm -f /logs/verifier/reward.txt /logs/verifier/reward.json")
            sb.put_dir(task_dir / "tests", "/tests")
            sb.exec("bash /tests/test.sh", verify_timeout_s, workdir)
            out.append(read_reward(sb))
        return out
    finally:
        sb.close()


def forged(
    make_sandbox: Callable[[], Any],
    task_dir: Path,
    *,
    verify_timeout_s: float,
    workdir: str,
) -> tuple[float | None, float | None]:
    """(reward after a planted conftest.py, reward after a forged reward file), both on the
    untouched start state, one container: the planted file is removed before the second."""
    sb = make_sandbox()
    sb.start()
    try:
        sb.exec(EDIT_TESTS)
        sb.put_dir(task_dir / "tests", "/tests")
        sb.exec("bash /tests/test.sh", verify_timeout_s, workdir)
        edited = read_reward(sb)
        sb.exec("rm -f /tests/conftest.py /logs/verifier/reward.txt /logs/verifier/reward.json")
        sb.exec(FORGE_REWARD)
        sb.exec("bash /tests/test.sh", verify_timeout_s, workdir)
        return edited, read_reward(sb)
    finally:
        sb.close()


def judge(
    s: Strength, twice: list[float | None], edited: float | None, forge: float | None
) -> Strength:
    s.deterministic = twice == [1.0, 1.0]
    if not s.deterministic:
        s.notes += f"the reference solution got {twice} on two runs; "
    s.rejects_test_edit = edited != 1.0
    if not s.rejects_test_edit:
        s.notes += f"a solution that plants tests/conftest.py got {edited}; "
    s.rejects_reward_write = forge != 1.0
    if not s.rejects_reward_write:
        s.notes += f"a solution that only writes the reward file got {forge}; "
    return s


def strength(
    make_sandbox: Callable[[], Any],
    task_dir: Path,
    *,
    solve_timeout_s: float,
    verify_timeout_s: float,
    workdir: str,
) -> Strength:
    """Every check of the module docstring (near miss only when the task has one)."""
    twice = verdicts(
        make_sandbox, task_dir, "bash /solution/solve.sh", runs=2,
        solve_timeout_s=solve_timeout_s, verify_timeout_s=verify_timeout_s, workdir=workdir,
    )  # fmt: skip
    edited, forge = forged(
        make_sandbox, task_dir, verify_timeout_s=verify_timeout_s, workdir=workdir
    )
    s = judge(Strength(), twice, edited, forge)
    near_miss(
        s, make_sandbox, task_dir, solve_timeout_s=solve_timeout_s,
        verify_timeout_s=verify_timeout_s, workdir=workdir,
    )  # fmt: skip
    return s


def near_miss(
    s: Strength,
    make_sandbox: Callable[[], Any],
    task_dir: Path,
    *,
    solve_timeout_s: float,
    verify_timeout_s: float,
    workdir: str,
) -> None:
    if not (task_dir / "solution" / "near_miss.sh").is_file():
        return
    near = verdicts(
        make_sandbox, task_dir, "bash /solution/near_miss.sh", solve_timeout_s=solve_timeout_s,
        verify_timeout_s=verify_timeout_s, workdir=workdir,
    )[0]  # fmt: skip
    s.rejects_near_miss = near != 1.0
    if not s.rejects_near_miss:
        s.notes += f"the near miss (solution/near_miss.sh) got {near}; "

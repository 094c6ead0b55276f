import subprocess
import sys

import pytest

sys.path.insert(0, "/app/calc")
from calc.duration import parse_duration


def test_suite_passes():
    r = subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-s", "tests"],
        cwd="/app/calc",
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_values():
    assert parse_duration("2h5s") == 7205


def test_empty():
    with pytest.raises(ValueError):
        parse_duration("")

import subprocess

REPO = "/app/repo"


def git(*args):
    return subprocess.run(
        ["git", "-C", REPO, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def run(*args):
    return subprocess.run(
        ["python3", "greet.py", *args], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()


def test_on_main_with_merge_commit():
    assert git("rev-parse", "--abbrev-ref", "HEAD") == "main"
    parents = git("rev-list", "--parents", "-n", "1", "HEAD").split()[1:]
    assert len(parents) == 2
    assert git("rev-parse", "feature/greeting") in parents


def test_both_options_work():
    assert run("--name", "Ada", "--shout") == "HELLO, ADA!"
    assert run() == "Hello, world!"
    assert run("--name", "Bo") == "Hello, Bo!"


def test_clean_tree_without_markers():
    assert git("status", "--porcelain") == ""
    assert "<<<<<<<" not in open(f"{REPO}/greet.py").read()

import subprocess

REPO = "/app/service"


def git(*args):
    return subprocess.run(
        ["git", "-C", REPO, *args], capture_output=True, text=True, check=True
    ).stdout


def test_secret_gone_from_all_refs():
    assert git("log", "--all", "--format=%H", "--", "config/secrets.env").strip() == ""
    assert git("for-each-ref", "refs/original/").strip() == ""


def test_history_kept():
    subjects = git("log", "--format=%s", "main").split("\n")
    for s in ["Add service", "Add configuration", "Service v2"]:
        assert s in subjects
    assert "config/settings.ini" in git("ls-tree", "-r", "--name-only", "main")
    assert "print('v2')" in git("show", "main:app.py")


def test_gitignore_commit_on_top():
    assert "config/secrets.env" in git("show", "main:.gitignore")
    assert ".gitignore" in git("show", "--name-only", "--format=", "main")

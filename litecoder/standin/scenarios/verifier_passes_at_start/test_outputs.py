import os


def test_exists():
    assert os.path.exists("/app/notes.txt")

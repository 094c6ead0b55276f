import os


def lines(path):
    return [ln for ln in open(path).read().split("\n") if ln]


def test_quarantined():
    assert lines("/app/quarantine/REPORT.txt") == ["app-1.1.tar", "notes.txt"]
    assert os.path.exists("/app/quarantine/app-1.1.tar")
    assert not os.path.exists("/app/downloads/app-1.1.tar")


def test_good_files_stay():
    for name in ["app-1.0.tar", "app-1.2.tar"]:
        assert os.path.exists(f"/app/downloads/{name}")


def test_missing_listed():
    assert lines("/app/quarantine/MISSING.txt") == ["app-0.9.tar"]

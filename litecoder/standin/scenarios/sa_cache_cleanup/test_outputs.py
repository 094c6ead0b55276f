import os


def test_old_files_deleted():
    for f in ["img/a.png", "img/old/b.png", "tmp/deep/x.bin", "tmp/y.bin"]:
        assert not os.path.exists(f"/srv/cache/{f}"), f


def test_recent_and_keep_files_stay():
    for f in ["img/new.png", "css/site.css", "img/old/logo.keep", ".now"]:
        assert os.path.exists(f"/srv/cache/{f}"), f


def test_empty_dirs_removed():
    assert not os.path.exists("/srv/cache/tmp")
    assert os.path.isdir("/srv/cache/img/old")


def test_log():
    assert open("/var/log/cache-cleanup.log").read().strip() == "deleted=4"

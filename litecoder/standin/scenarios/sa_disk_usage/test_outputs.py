import subprocess


def du(name):
    out = subprocess.run(
        ["du", "-sb", f"/data/projects/{name}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[0])


def test_usage():
    lines = [ln for ln in open("/root/usage.txt").read().split("\n") if ln]
    assert [ln.split()[1] for ln in lines] == ["gamma", "delta", "alpha"]
    for ln in lines:
        size, name = ln.split()
        assert int(size) == du(name)

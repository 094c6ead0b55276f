import subprocess
import zipfile

PYZ = "/app/dist/tool.pyz"


def run(*args):
    return subprocess.run(["python3", PYZ, *args], cwd="/", capture_output=True, text=True)


def test_version_from_file():
    assert run("--version").stdout.strip() == open("/app/VERSION").read().strip()


def test_greet():
    assert run("greet", "Bob").stdout.strip() == "Hello, Bob"


def test_no_bytecode():
    names = zipfile.ZipFile(PYZ).namelist()
    assert "__main__.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

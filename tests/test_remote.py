"""DVC remote storage for real: every stage output of a smoke run pushed to an S3-compatible
server on loopback (moto's standalone server, a stand-in for S3/MinIO), pulled into a fresh
clone, and experiments pushed and pulled the same way."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import run

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


@pytest.fixture
def s3() -> Iterator[str]:
    """moto's S3-compatible server on a free loopback port, with a bucket."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not come up"
                time.sleep(0.2)
        import boto3

        boto3.client("s3", endpoint_url=url, region_name="us-east-1", **_creds()).create_bucket(
            Bucket="litecoder"
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _creds() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.mark.cluster
def test_smoke_outputs_push_and_pull_through_s3(smoke: Path, s3: str, tmp_path: Path) -> None:
    env = {**CREDS}
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    src = tmp_path / "src"
    shutil.copytree(smoke, src, symlinks=True)
    # The remote as the README sets it up.
    run(["dvc", "remote", "add", "-d", "store", "s3://litecoder/dvc"], src)
    run(["dvc", "remote", "modify", "store", "endpointurl", s3], src)
    run(["git", "add", "-A"], src)
    run([*GIT, "commit", "-qm", "smoke run"], src)
    run(["git", "remote", "add", "origin", str(origin)], src)
    run(["git", "push", "-q", "origin", "main"], src)
    run(["dvc", "push"], src, env=env, timeout=900)
    assert "in sync" in run(["dvc", "status", "-c"], src, env=env).stdout

    dst = tmp_path / "dst"
    run(["git", "clone", "-q", str(origin), str(dst)], tmp_path)
    assert not (dst / "data/sft/train.jsonl").exists()
    run(["dvc", "pull"], dst, env=env, timeout=900)
    status = run(["dvc", "status"], dst, env=env).stdout
    assert "Data and pipelines are up to date" in status, status
    for out in ("data/sft/train.jsonl", "data/envs/splits.json", "models/model.json"):
        assert (dst / out).read_bytes() == (src / out).read_bytes(), out

    # Experiments: one saved in src, pushed (Git refs + data), pulled into the clone.
    params = yaml.safe_load((src / "params.yaml").read_text())
    params["train"]["learning_rate"] = 0.00123
    (src / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "exp", "save", "-n", "lr-tweak", "-f"], src, env=env)
    run(["dvc", "exp", "push", "origin", "lr-tweak"], src, env=env, timeout=900)
    run(["dvc", "exp", "pull", "origin", "lr-tweak"], dst, env=env, timeout=900)
    listed = run(["dvc", "exp", "list", "--name-only"], dst, env=env).stdout.split()
    assert "lr-tweak" in listed
    assert (
        os.path.exists(dst / ".dvc/config") and "endpointurl" in (dst / ".dvc/config").read_text()
    )

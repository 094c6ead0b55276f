"""What comes out of a container is made safe for the host (no Docker needed)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from litecoder.sandbox import extract_archive, sanitize_tree


def _tar(entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in entries:
            body = data.get(info.name)
            if body is not None:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type = kind
    t.mode = 0o644 if kind != tarfile.DIRTYPE else 0o755
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def test_extract_refuses_escapes_and_privilege(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host file\n")
    root = tmp_path / "files"
    cap = _info("app/capped")
    cap.pax_headers = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
    entries = [
        _info("app", tarfile.DIRTYPE),
        _info("app/ok.txt"),
        _info("app/rootsh", mode=0o4755, uid=0),
        _info("app/sgid", mode=0o2755),
        cap,
        _info("app/link_abs", tarfile.SYMTYPE, linkname=str(host)),
        _info("app/link_up", tarfile.SYMTYPE, linkname="../../../../../" + str(host)),
        _info("app/through", tarfile.SYMTYPE, linkname="/etc"),
        _info("app/through/passwd"),  # would be written through a link
        _info("../escape.txt"),
        _info("/abs.txt"),
        _info("app/bad\nname"),
        _info("app/disk", tarfile.BLKTYPE, devmajor=8, devminor=0),
        _info("app/fifo", tarfile.FIFOTYPE),
        _info("app/hard", tarfile.LNKTYPE, linkname="../../" + str(host / "secret")),
        _info("app/hard_ok", tarfile.LNKTYPE, linkname="app/ok.txt"),
        _info("app/owned", uid=1000, gid=1000),
    ]
    data = {e.name: b"x\n" for e in entries if e.type == tarfile.REGTYPE}
    res = extract_archive([_tar(entries, data)], root, PurePosixPath("/"), max_bytes=2**20)
    reasons = {r.path: r.reason for r in res.refused}
    assert reasons["/app/rootsh"] == "setuid/setgid bit dropped (mode 4755)"
    assert reasons["/app/sgid"] == "setuid/setgid bit dropped (mode 2755)"
    assert "file capability security.capability dropped" in reasons["/app/capped"]
    assert reasons["/app/through/passwd"] == "would be written through a link"
    assert reasons["/../escape.txt"] == "'..' in the name"
    assert "control character" in reasons["/app/bad\nname"]
    assert reasons["/app/disk"] == "device node not copied"
    assert reasons["/app/fifo"] == "FIFO not copied"
    assert "outside the archive" in reasons["/app/hard"]
    assert "/abs.txt" in reasons
    # What was written is inside, unprivileged, and links point inside.
    assert stat.S_IMODE((root / "app/rootsh").stat().st_mode) == 0o755
    for link in ("link_abs", "link_up", "through"):
        target = os.readlink(root / "app" / link)
        assert not target.startswith("/")
        resolved = os.path.normpath(os.path.join(root / "app", target))
        assert resolved.startswith(str(root)), (link, target)
    assert os.readlink(root / "app/through") == "../etc"
    assert (root / "app/hard_ok").stat().st_ino == (root / "app/ok.txt").stat().st_ino
    assert res.owners == {"/app/owned": "1000:1000"}
    assert (host / "secret").read_text() == "host file\n" and not (tmp_path / "escape.txt").exists()
    assert sorted(p.name for p in host.iterdir()) == ["secret"]


def test_extract_stops_at_the_size_cap(tmp_path: Path) -> None:
    from litecoder.sandbox.untrusted import ArchiveTooLarge

    big = _tar([_info("big")], {"big": b"0" * 300_000})
    with pytest.raises(ArchiveTooLarge):
        extract_archive(
            [big[i : i + 4096] for i in range(0, len(big), 4096)],
            tmp_path,
            PurePosixPath("/"),
            max_bytes=100_000,
        )


@pytest.mark.skipif(os.geteuid() != 0, reason="device nodes and setuid-root files need root")
def test_sanitize_tree_makes_a_job_dir_safe(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("host file\n")
    job = tmp_path / "job"
    (job / "agent").mkdir(parents=True)
    (job / "agent/rootsh").write_bytes(b"#!/bin/sh\n")
    os.chmod(job / "agent/rootsh", 0o4755)
    os.mknod(job / "agent/disk", 0o600 | stat.S_IFBLK, os.makedev(8, 0))
    os.mkfifo(job / "agent/fifo")
    (job / "agent/abs").symlink_to("/etc/shadow")
    (job / "agent/up").symlink_to("../../outside")
    (job / "agent/fine").symlink_to("rootsh")
    os.link(outside, job / "agent/hard")
    (job / "agent/trajectory.json").write_text("{}")
    refused = {r.path: r.reason for r in sanitize_tree(job)}
    assert refused == {
        "agent/rootsh": "setuid/setgid bit cleared (mode 4755)",
        "agent/disk": "device node, FIFO or socket removed",
        "agent/fifo": "device node, FIFO or socket removed",
        "agent/abs": "link to '/etc/shadow' leaves the directory",
        "agent/up": "link to '../../outside' leaves the directory",
        "agent/hard": "hard link to a file outside",
    }
    assert stat.S_IMODE((job / "agent/rootsh").stat().st_mode) == 0o755
    assert (job / "agent/fine").is_symlink() and (job / "agent/trajectory.json").exists()
    assert (job / "agent/hard").stat().st_ino != outside.stat().st_ino
    assert outside.read_text() == "host file\n" and outside.stat().st_nlink == 1
    assert sanitize_tree(job) == []  # nothing left to do

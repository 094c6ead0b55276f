"""What comes out of a container is hostile until made safe for the host.

`extract_archive` writes a container's tar stream under a host directory and refuses what
could carry privilege or escape it: absolute or `..` names, names with control characters,
device nodes, FIFOs and sockets, hard links to anything but a file of the same archive,
writes through a link, setuid/setgid bits, file capabilities and other extended attributes.
Symbolic links are kept, rewritten to relative targets that stay inside the directory (an
absolute target means the container's root, which is the directory's root).

`sanitize_tree` applies the same rules to a directory that something else filled (Harbor's job
directories, which it copies out of trial containers): special files and escaping links are
removed, setuid/setgid bits and file capabilities cleared, hard links to files outside the
tree broken. Both report every refusal with the path and the reason.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

PRIVILEGE_BITS = stat.S_ISUID | stat.S_ISGID


@dataclass(frozen=True)
class Refusal:
    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Extracted:
    """What an extraction wrote and refused, plus owners to re-apply inside an image."""

    files: int = 0
    bytes: int = 0
    entries: int = 0  # every archive member seen, written or not
    refused: list[Refusal] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # container path -> "uid:gid"


class ArchiveTooLarge(Exception):
    pass


class TooManyFiles(ArchiveTooLarge):
    pass


def unsafe_name(name: str) -> str | None:
    """Why a path from a container cannot be used on the host (or in a Dockerfile)."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "control character in the name"
    p = PurePosixPath(name)
    if ".." in p.parts:
        return "'..' in the name"
    return None


class _Stream:
    """A file-like view of an iterable of byte chunks, with a size cap."""

    def __init__(self, chunks: Iterable[bytes], limit: int):
        self.it = iter(chunks)
        self.buf = b""
        self.read_total = 0
        self.limit = limit

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            try:
                chunk = next(self.it)
            except StopIteration:
                break
            self.read_total += len(chunk)
            if self.read_total > self.limit:
                raise ArchiveTooLarge(f"more than {self.limit} bytes")
            self.buf += chunk
        if n < 0:
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _inside(root: Path, path: Path) -> bool:
    """Whether `path`'s parent, with every link on disk resolved, is inside `root`, and no
    existing component below `root` is a link (nothing is ever written through a link)."""
    rel = path.relative_to(root)
    cur = root
    for part in rel.parts[:-1]:
        cur = cur / part
        if cur.is_symlink():
            return False
    return os.path.realpath(path.parent).startswith(os.path.realpath(root))


def _relative_link(container_path: PurePosixPath, target: str) -> str:
    """A link target as seen from the container's root, made relative to the link's directory
    (so it resolves the same inside the image and never leaves the directory on the host)."""
    base = container_path.parent
    absolute = posixpath.normpath(target if target.startswith("/") else str(base / target))
    return posixpath.relpath(absolute, str(base))


def extract_archive(
    chunks: Iterable[bytes],
    root: Path,
    parent: PurePosixPath,
    *,
    max_bytes: int,
    skip: Callable[[str], bool] = lambda _: False,
    result: Extracted | None = None,
    max_files: int | None = None,
) -> Extracted:
    """Extract a container archive of `parent/<name>` (what `docker cp` of that name gives)
    under `root`, which stands for the container's `/`. More than `max_files` entries (over
    every call sharing `result`) raise TooManyFiles."""
    res = result or Extracted()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    with tarfile.open(fileobj=_Stream(chunks, max_bytes), mode="r|") as tar:  # type: ignore[call-overload]
        for m in tar:
            res.entries += 1
            if max_files is not None and res.entries > max_files:
                raise TooManyFiles(f"more than {max_files} entries")
            cpath = parent / m.name
            shown = str(cpath)
            why = unsafe_name(m.name) or (
                "absolute name in the archive" if m.name.startswith("/") else None
            )
            if why:
                res.refused.append(Refusal(shown, why))
                continue
            if skip(shown):
                continue
            dest = root / str(cpath).lstrip("/")
            if not _inside(root, dest):
                res.refused.append(Refusal(shown, "would be written through a link"))
                continue
            for key in m.pax_headers:
                if key.startswith("SCHILY.xattr."):
                    attr = key.removeprefix("SCHILY.xattr.")
                    what = "file capability" if attr == "security.capability" else "attribute"
                    res.refused.append(Refusal(shown, f"extended {what} {attr} dropped"))
            if m.uid or m.gid:
                res.owners[shown] = f"{m.uid}:{m.gid}"
            dest.parent.mkdir(parents=True, exist_ok=True)  # no link on the way (checked)
            if m.isdir():
                if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                    dest.unlink()
                dest.mkdir(exist_ok=True)
                os.chmod(dest, m.mode & 0o3777)  # setgid on a directory only sets new files' group
                continue
            if dest.is_symlink() or dest.is_file():
                dest.unlink()
            elif dest.is_dir():
                shutil.rmtree(dest)
            if m.isfile():
                mode = m.mode & 0o1777
                if m.mode & PRIVILEGE_BITS:
                    res.refused.append(
                        Refusal(shown, f"setuid/setgid bit dropped (mode {m.mode & 0o7777:o})")
                    )
                src = tar.extractfile(m)
                assert src is not None
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(src, f)
                os.chmod(dest, mode)
                os.utime(dest, (m.mtime, m.mtime), follow_symlinks=False)
                res.files += 1
                res.bytes += m.size
            elif m.issym():
                os.symlink(_relative_link(cpath, m.linkname), dest)
                with contextlib.suppress(OSError, NotImplementedError):
                    os.utime(dest, (m.mtime, m.mtime), follow_symlinks=False)
            elif m.islnk():
                why = unsafe_name(m.linkname) or (
                    "absolute hard link" if m.linkname.startswith("/") else None
                )
                target = root / str(parent / m.linkname).lstrip("/")
                if why or not (_inside(root, target) and target.is_file()):
                    res.refused.append(
                        Refusal(shown, f"hard link to {m.linkname!r} outside the archive")
                    )
                    continue
                os.link(target, dest, follow_symlinks=False)
            else:
                kind = (
                    "device node"
                    if m.ischr() or m.isblk()
                    else "FIFO"
                    if m.isfifo()
                    else f"special file (type {m.type!r})"
                )
                res.refused.append(Refusal(shown, f"{kind} not copied"))
    return res


def sanitize_tree(root: Path) -> list[Refusal]:
    """Make a directory filled from a container safe for the host, in place."""
    refused: list[Refusal] = []
    if not root.is_dir() or root.is_symlink():
        return refused
    real_root = os.path.realpath(root)
    inodes: dict[tuple[int, int], int] = {}
    files: list[tuple[Path, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            p = here / name
            rel = str(p.relative_to(root))
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                resolved = os.path.realpath(p)
                lexical = os.path.normpath(os.path.join(dirpath, target))
                norm_root = os.path.normpath(str(root))
                if os.path.isabs(target) or not (
                    (resolved == real_root or resolved.startswith(real_root + os.sep))
                    and (lexical == norm_root or lexical.startswith(norm_root + os.sep))
                ):
                    p.unlink()
                    refused.append(Refusal(rel, f"link to {target!r} leaves the directory"))
                continue
            if stat.S_ISDIR(st.st_mode):
                if st.st_mode & stat.S_ISUID:
                    os.chmod(p, stat.S_IMODE(st.st_mode) & ~stat.S_ISUID)
                continue
            if not stat.S_ISREG(st.st_mode):
                p.unlink()
                refused.append(Refusal(rel, "device node, FIFO or socket removed"))
                continue
            if st.st_mode & PRIVILEGE_BITS:
                os.chmod(p, stat.S_IMODE(st.st_mode) & ~PRIVILEGE_BITS)
                refused.append(
                    Refusal(rel, f"setuid/setgid bit cleared (mode {stat.S_IMODE(st.st_mode):o})")
                )
            with contextlib.suppress(OSError):
                if "security.capability" in os.listxattr(p, follow_symlinks=False):
                    os.removexattr(p, "security.capability", follow_symlinks=False)
                    refused.append(Refusal(rel, "file capability removed"))
            key = (st.st_dev, st.st_ino)
            inodes[key] = inodes.get(key, 0) + 1
            files.append((p, st))
    for p, st in files:
        if st.st_nlink > inodes[(st.st_dev, st.st_ino)]:
            # Linked to a file outside the tree: keep a private copy, never the shared inode.
            tmp = p.with_name(p.name + ".litecoder-copy")
            shutil.copyfile(p, tmp, follow_symlinks=False)
            os.chmod(tmp, stat.S_IMODE(st.st_mode) & ~PRIVILEGE_BITS)
            os.replace(tmp, p)
            refused.append(Refusal(str(p.relative_to(root)), "hard link to a file outside"))
    return refused


def make_private(path: Path) -> None:
    """Only the owner may enter `path`: what containers write there is out of other users'
    reach until it has been sanitized."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


# --- copy-out: what a trial hands back (logs, rewards, artifacts) ----------------------------


@dataclass(frozen=True)
class CopyCaps:
    """Bounds on one copy out of a container."""

    max_file_bytes: int = 64 * 2**20
    max_total_bytes: int = 256 * 2**20
    max_files: int = 10_000


@dataclass
class CopyOut:
    files: int = 0
    bytes: int = 0
    refused: list[Refusal] = field(default_factory=list)
    stopped: str | None = None  # why the copy ended early (what came before it was kept)


def copy_out(
    chunks: Iterable[bytes],
    dest: Path,
    *,
    caps: CopyCaps,
    strip: int = 1,
    select: Callable[[str], bool] = lambda _: True,
    file_cap: Callable[[str], int] | None = None,
) -> CopyOut:
    """Write a container archive under `dest`: regular files and directories only, never a
    link, device, FIFO or socket, no privilege bits, each file and the whole copy size-capped
    (from the member headers, before a byte is written: a sparse 1 TB file costs nothing to
    refuse) and the number of entries capped. `strip` leading name components are dropped
    (the archive of /logs/verifier names its members verifier/...); `select` picks members by
    their stripped name; `file_cap` gives a smaller cap to some names (a reward file).

    Skipping a member still means reading it off the stream, so the bytes read are bounded
    too: past that the copy stops, keeping what came before."""
    res = CopyOut()
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    read_budget = 2 * caps.max_total_bytes + 2**20
    stream = _Stream(chunks, read_budget + 2**20)
    entries = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for m in tar:
                entries += 1
                parts = PurePosixPath(m.name).parts[strip:]
                rel = "/".join(parts)
                if entries > caps.max_files:
                    res.stopped = f"more than {caps.max_files} entries"
                    break
                if stream.read_total + m.size > read_budget:
                    # Skipping it means reading it: the copy ends here, what came before stays.
                    over = f"{m.size} bytes: over the copy's bounds (nothing after it copied)"
                    res.refused.append(Refusal(rel or m.name, over))
                    res.stopped = f"{rel or m.name} is too large to pass"
                    break
                if not rel:
                    continue
                why = unsafe_name(m.name) or ("absolute name" if m.name.startswith("/") else None)
                if why:
                    res.refused.append(Refusal(m.name, why))
                    continue
                if not select(rel):
                    continue
                target = root / rel
                if not _inside(root, target):
                    res.refused.append(Refusal(rel, "would be written through a link"))
                    continue
                if m.isdir():
                    if target.is_symlink() or (target.exists() and not target.is_dir()):
                        target.unlink()
                    target.mkdir(parents=True, exist_ok=True)
                    os.chmod(target, (m.mode & 0o777) | 0o700)
                    continue
                if not m.isfile():
                    kind = "link" if m.issym() or m.islnk() else "device, FIFO or socket"
                    res.refused.append(Refusal(rel, f"{kind} not copied"))
                    continue
                cap = min(caps.max_file_bytes, file_cap(rel) if file_cap else caps.max_file_bytes)
                if m.size > cap:
                    res.refused.append(Refusal(rel, f"{m.size} bytes: over the {cap}-byte cap"))
                    continue
                if res.bytes + m.size > caps.max_total_bytes:
                    res.refused.append(
                        Refusal(rel, f"{m.size} bytes: the copy's {caps.max_total_bytes}-byte cap")
                    )
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink() or target.is_file():
                    target.unlink()
                elif target.is_dir():
                    shutil.rmtree(target)
                src = tar.extractfile(m)
                assert src is not None
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(src, f)
                os.chmod(target, (m.mode & 0o777) | 0o600)
                os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)
                if m.mode & PRIVILEGE_BITS:
                    why = f"setuid/setgid bit dropped (mode {m.mode & 0o7777:o})"
                    res.refused.append(Refusal(rel, why))
                res.files += 1
                res.bytes += m.size
    except ArchiveTooLarge as e:
        res.stopped = str(e)
    except tarfile.TarError as e:
        res.stopped = f"not a readable archive: {e}"
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()
    return res

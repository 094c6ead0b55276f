"""The starting state a setup agent left in its container, as build-context files.

The container is stopped first, so nothing running in it can change what is read (a swap of
a directory for a link mid-capture, say). `docker diff` names what changed; each changed tree
is read as an archive and extracted by the sandbox layer's untrusted-archive rules, under
files/ with container paths (modes, mtimes, links, empty dirs kept; owners re-applied by the
Dockerfile). Whatever those rules refuse (privilege bits, device nodes, escaping links, ...)
is listed in the capture report with its path and the reason.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, Field

from litecoder.config import Capture
from litecoder.sandbox import Refusal, Sandbox, extract_archive, sanitize_tree
from litecoder.sandbox.untrusted import ArchiveTooLarge, Extracted, TooManyFiles, unsafe_name


class CaptureTooLarge(Exception):
    pass


class CaptureReport(BaseModel):
    has_files: bool = False
    files: int = 0
    bytes: int = 0
    deleted: list[str] = Field(default_factory=list)
    owners: dict[str, str] = Field(default_factory=dict)
    empty_dirs: list[str] = Field(default_factory=list)
    refused: list[dict[str, str]] = Field(default_factory=list)

    def dockerfile_state(self) -> dict[str, Any]:
        """What render_dockerfile needs to rebuild this state."""
        return self.model_dump(include={"has_files", "deleted", "owners", "empty_dirs"})


def excluded(path: str, cap: Capture) -> bool:
    p = PurePosixPath(path)
    if any(part in cap.exclude_names for part in p.parts):
        return True
    return any(path == e or path.startswith(e.rstrip("/") + "/") for e in cap.exclude)


def capture_state(sandbox: Sandbox, cap: Capture, env_dir: Path) -> CaptureReport:
    """Stop the sandbox and extract what changed into env_dir/files/."""
    sandbox.stop()
    report = CaptureReport()
    refused: list[Refusal] = []
    changes = []
    diff = sandbox.diff()
    # Directories: whatever has a changed child (excluded children count, e.g. a mount point).
    parents = {str(PurePosixPath(c["Path"]).parent) for c in diff}
    for c in diff:
        why = unsafe_name(c["Path"])
        if why:
            refused.append(Refusal(c["Path"], why))
        elif not excluded(c["Path"], cap):
            changes.append(c)
    kind = {c["Path"]: c["Kind"] for c in changes}  # 0 changed, 1 added, 2 deleted
    report.deleted = sorted(
        p for p, k in kind.items() if k == 2 and kind.get(str(PurePosixPath(p).parent)) != 2
    )
    roots = []
    for p, k in kind.items():
        parent = str(PurePosixPath(p).parent)
        if k == 1 and kind.get(parent) != 1:
            roots.append(p)  # a new file or tree whose parent existed before
        elif k == 0 and p not in parents:
            roots.append(p)  # a changed file (a changed directory has changed children)
    files_dir = env_dir / "files"
    res = Extracted()
    budget = cap.max_bytes
    for root in sorted(roots):
        before = res.bytes
        try:
            extract_archive(
                sandbox.archive_chunks(root),
                files_dir,
                PurePosixPath(root).parent,
                max_bytes=max(1, budget) * 2 + 2**20,  # tar headers and padding on top
                skip=lambda p: excluded(p, cap),
                result=res,
                max_files=cap.max_files,
            )
        except TooManyFiles:
            raise CaptureTooLarge(f"starting state has more than {cap.max_files} entries") from None
        except ArchiveTooLarge:
            raise CaptureTooLarge(f"starting state is larger than {cap.max_bytes} bytes") from None
        budget -= res.bytes - before
        if budget < 0:
            raise CaptureTooLarge(f"starting state is larger than {cap.max_bytes} bytes")
    refused += res.refused
    refused += sanitize_tree(files_dir)  # a second look; finds nothing unless a rule slipped
    report.has_files = files_dir.is_dir() and any(files_dir.iterdir())
    report.files, report.bytes = res.files, res.bytes
    report.owners = res.owners
    if files_dir.is_dir():
        report.empty_dirs = sorted(
            "/" + str(d.relative_to(files_dir))
            for d in files_dir.rglob("*")
            if d.is_dir() and not d.is_symlink() and not any(d.iterdir())
        )
    report.refused = [r.to_dict() for r in refused]
    return report

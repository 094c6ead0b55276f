"""`litecoder base-image`: the image every task environment starts FROM.

With a registry it is pulled (e.g. ubuntu:24.04) and task Dockerfiles carry a prelude that
installs what Harbor's Terminus-2 and the verifiers need. Offline it is built locally:
debootstrap a minimal Debian with those packages, then `docker import` it. The image is
labelled with a hash of its config, so a second call is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from litecoder.config import BaseImage
from litecoder.config.security import BuildSecurity
from litecoder.io import tail
from litecoder.sandbox import (
    LABEL,
    PROJECT_LABEL,
    SandboxError,
    build_image,
    docker_client,
    image_labels,
    import_rootfs,
    labels_of_image,
    pull_image,
)

log = logging.getLogger(__name__)


LABELS_VERSION = 2  # images carry `litecoder.image`, never `litecoder` (sandbox.engine)


def config_hash(base: BaseImage) -> str:
    payload = {**base.model_dump(), "labels": LABELS_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def sandbox_image(base: BaseImage) -> str:
    """The image scratch containers run: the base itself, or base + prelude when it has one."""
    if not base.dockerfile_prelude:
        return base.name
    return f"litecoder-base-prepared:{config_hash(base)}"


def debian_mirror(
    sources: tuple[Path, ...] = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d")),
) -> str:
    """The Debian mirror this machine's apt uses (deb lines or deb822 URIs)."""
    texts = []
    for src in sources:
        files = sorted(src.glob("*")) if src.is_dir() else [src]
        texts += [
            f.read_text(errors="replace")
            for f in files
            if f.is_file() and (f.suffix in (".list", ".sources") or f.name == "sources.list")
        ]
    for text in texts:
        for m in re.finditer(r"^(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)", text, re.M):
            url = m.group(1)
            if "security" not in url and "debian" in url:
                return url
    return "http://deb.debian.org/debian"


def ensure(base: BaseImage, *, force: bool = False) -> str:
    """Build or pull the base image (and the prepared sandbox image) unless up to date."""
    client = docker_client()
    h = config_hash(base)
    lab = {**image_labels("base-image", None, "base-image"), f"{LABEL}.base.hash": h}
    lab.pop(PROJECT_LABEL)  # one base image serves every project
    have = labels_of_image(client, base.name)
    if (
        have is not None
        and not force
        and (base.build == "pull" or have.get(f"{LABEL}.base.hash") == h)
    ):
        log.info("base image %s is up to date", base.name)
    elif base.build == "pull":
        log.info("pulling %s", base.name)
        pull_image(client, base.name)
    else:
        _debootstrap(client, base, lab)
    if base.dockerfile_prelude:
        prepared = sandbox_image(base)
        if labels_of_image(client, prepared) is None or force:
            with tempfile.TemporaryDirectory() as tmp:
                lines = [f"FROM {base.name}", *base.dockerfile_prelude]
                (Path(tmp) / "Dockerfile").write_text("\n".join(lines) + "\n")
                # The prelude installs packages from the registry's mirrors: network on.
                build_image(client, Path(tmp), prepared, lab, 1800, BuildSecurity(network=True))
    return base.name


def _debootstrap(client: object, base: BaseImage, lab: dict[str, str]) -> None:
    if not shutil.which("debootstrap"):
        raise SandboxError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = base.mirror or debian_mirror()
    suite = base.suite or "bookworm"
    log.info("building %s with debootstrap (%s from %s)", base.name, suite, mirror)
    with tempfile.TemporaryDirectory(prefix="litecoder-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(base.packages)}",
            suite,
            str(rootfs),
            mirror,
        ]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SandboxError(f"debootstrap failed: {tail(r.stdout + r.stderr)}")
        # Slimmer image: apt lists and caches are not needed inside task containers.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        import_rootfs(client, tarball, base.name, lab)
    log.info("built %s", base.name)

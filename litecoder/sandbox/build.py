"""Image builds, imports and pulls.

Every image a litecoder container or a Harbor trial runs is built here, by the engine's
classic builder, whose `RUN` steps can be confined: no network unless allowed, a memory limit
with no swap, a CPU weight and a wall-clock timeout. (BuildKit, which `docker compose build`
uses, offers none of these per build.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from litecoder.config.security import BuildSecurity
from litecoder.sandbox.engine import LEDGER_DIR, BuildError, SandboxError, one_line


def image_exists(client: Any, name: str) -> bool:
    return labels_of_image(client, name) is not None


def labels_of_image(client: Any, name: str) -> dict[str, str] | None:
    """Labels of a local image, or None if it is not there."""
    from docker.errors import ImageNotFound

    try:
        return client.images.get(name).labels or {}
    except ImageNotFound:
        return None


def build_image(
    client: Any,
    context: Path,
    tag: str,
    labels: dict[str, str],
    timeout_s: float,
    limits: BuildSecurity | None = None,
    *,
    dockerfile: str = "Dockerfile",
    buildargs: dict[str, str] | None = None,
) -> str:
    """`docker build` of a directory (its Dockerfile), confined. Returns the image id."""
    from docker.errors import APIError
    from docker.errors import BuildError as DockerBuildError

    lim = limits or BuildSecurity()
    lines: deque[str] = deque(maxlen=200)  # a RUN step may print without end: keep a tail
    layers: list[str] = []  # image ids of the steps done: a failed build's leftovers
    # The same ids on disk, for whoever finds this process killed mid-build.
    ledger = LEDGER_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.layers"
    LEDGER_DIR.mkdir(exist_ok=True)
    before = _image_id(client, tag)  # an earlier build of this tag (e.g. by a killed run)
    start = time.monotonic()
    memory = lim.memory_mb * 2**20
    try:
        for chunk in client.api.build(
            path=str(context),
            dockerfile=dockerfile,
            buildargs=buildargs or None,
            tag=tag,
            labels=labels,
            rm=True,
            forcerm=True,
            decode=True,
            timeout=int(timeout_s),
            network_mode="default" if lim.network else "none",
            container_limits={"memory": memory, "memswap": memory, "cpushares": lim.cpu_shares},
        ):
            if "stream" in chunk:
                lines.append(chunk["stream"][-4096:])
                m = re.match(r"\s*---> ([0-9a-f]{12,})\s*$", chunk["stream"])
                if m:
                    layers.append(m.group(1))
                    with ledger.open("a") as f:
                        f.write(m.group(1) + "\n")
            if "error" in chunk:
                tail = _tail(lines) + chunk["error"]
                raise BuildError(f"docker build failed: {chunk['error'].strip()}", tail)
            if time.monotonic() - start > timeout_s:
                raise BuildError(f"docker build timed out after {timeout_s:.0f}s", _tail(lines))
    except (APIError, DockerBuildError) as e:
        _remove_layers(client, layers)
        raise BuildError(f"docker build failed: {one_line(e)}", _tail(lines)) from None
    except BuildError:
        _remove_layers(client, layers)
        raise
    except Exception as e:  # a read timeout of the stream, a dropped connection
        _remove_layers(client, layers)
        raise BuildError(f"docker build failed: {one_line(e)}", _tail(lines)) from None
    finally:
        ledger.unlink(missing_ok=True)
    image_id = str(client.images.get(tag).id)
    if before and before != image_id:  # the tag moved on: the old image, untagged now, goes
        with contextlib.suppress(Exception):
            if not client.images.get(before).tags:
                client.images.remove(before, noprune=False)
    return image_id


def _tail(lines: deque[str]) -> str:
    return "".join(list(lines)[-30:])


def _image_id(client: Any, name: str) -> str | None:
    try:
        return str(client.images.get(name).id)
    except Exception:
        return None


def _remove_layers(client: Any, layers: list[str]) -> None:
    """A failed build's own intermediate images, newest first; never another build's (several
    builds run at once, so a prune of whatever is dangling would break them)."""
    for image_id in reversed(layers):
        with contextlib.suppress(Exception):
            client.images.remove(image_id, noprune=False)


def import_rootfs(client: Any, tarball: Path, name: str, lab: dict[str, str]) -> str:
    """`docker import` of a root file system tarball as image `name` (repo:tag)."""
    repo, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "latest")
    changes = ['CMD ["bash"]'] + [f"LABEL {k}={json.dumps(v)}" for k, v in lab.items()]
    client.api.import_image_from_file(str(tarball), repository=repo, tag=tag, changes=changes)
    image_id: str = client.images.get(name).id
    return image_id


def pull_image(client: Any, name: str) -> str:
    try:
        image_id: str = client.images.pull(name).id
        return image_id
    except Exception as e:
        raise SandboxError(f"cannot pull {name}: {one_line(e)}") from None


_PRIVILEGED_CACHE: dict[str, dict[str, str]] = {}


def _privileged(client: Any, image: str) -> dict[str, str]:
    """path -> what is privileged about it, for every setuid/setgid file, device node and
    file capability in an image (read from the engine's archive of a created, never started,
    container: only the headers matter, the contents stream past)."""
    import tarfile

    from litecoder.sandbox.untrusted import _Stream

    image_id = str(client.images.get(image).id)
    if image_id in _PRIVILEGED_CACHE:
        return _PRIVILEGED_CACHE[image_id]
    found: dict[str, str] = {}
    c = client.containers.create(image_id, ["true"], network_mode="none")
    try:
        stream, _ = c.get_archive("/")
        reader = _Stream(stream, limit=1 << 62)  # an image's own size is bounded by the engine
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for m in tar:
                path = "/" + m.name.lstrip("./")
                what = []
                if m.ischr() or m.isblk():
                    what.append("device node")
                if m.isfile() and m.mode & 0o6000:
                    what.append(f"setuid/setgid file (mode {m.mode & 0o7777:o})")
                if "SCHILY.xattr.security.capability" in m.pax_headers:
                    what.append("file capability")
                if what:
                    found[path] = ", ".join(what)
    finally:
        with contextlib.suppress(Exception):
            c.remove(force=True)
    _PRIVILEGED_CACHE[image_id] = found
    return found


def privileged_entries(client: Any, image: str, base: str | None) -> list[str]:
    """What privileged entries `image` has that `base` (its FROM, when on this engine) lacks:
    "PATH: setuid/setgid file (mode 4755)", ... Harmless in litecoder's containers
    (no-new-privileges, no MKNOD), reported for whoever runs the image elsewhere."""
    mine = _privileged(client, image)
    theirs: dict[str, str] = {}
    if base is not None and image_exists(client, base):
        theirs = _privileged(client, base)
    return [f"{p}: {w}" for p, w in sorted(mine.items()) if theirs.get(p) != w]

"""Where the environment agent's actions land: a container, or a part of the task dir."""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePosixPath

from litecoder.harbor.compose import COMPOSE_NAMES
from litecoder.sandbox import ExecResult, Sandbox


class ContainerExecutor:
    """Commands and files inside one container (setup in container mode)."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox

    async def run(self, command: str) -> ExecResult:
        return await asyncio.to_thread(self.sandbox.exec, command)

    async def write_file(self, path: str, content: str) -> str:
        if not path.startswith("/"):
            path = str(PurePosixPath(self.sandbox.workdir) / path)
        await asyncio.to_thread(
            self.sandbox.write_file, path, content, 0o755 if path.endswith(".sh") else 0o644
        )
        return f"wrote {path} ({len(content.encode())} bytes)"


class TaskDirExecutor:
    """Files under one part of the task directory (mirrored into the container), commands
    in a container (solution/verifier: of the starting state; dockerfile setup: of the base).
    The environment's compose file is litecoder's: the agent may not write it."""

    def __init__(self, task_dir: Path, prefix: str, sandbox: Sandbox, mirror: str | None):
        self.task_dir, self.prefix, self.sandbox, self.mirror = task_dir, prefix, sandbox, mirror

    async def run(self, command: str) -> ExecResult:
        return await asyncio.to_thread(self.sandbox.exec, command)

    async def write_file(self, path: str, content: str) -> str:
        rel = PurePosixPath(path.lstrip("/"))
        if rel.parts[:1] != (self.prefix,) or ".." in rel.parts or len(rel.parts) < 2:
            return f"error: in this step you may only write files under {self.prefix}/ (not {path})"
        if rel.parts[0] == "environment" and rel.name in COMPOSE_NAMES:
            return (
                f"error: {rel} is written by litecoder (it sets the container's limits); "
                "put everything the environment needs into the Dockerfile and its inputs"
            )
        dest = self.task_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(content)
        if rel.suffix == ".sh":
            dest.chmod(0o755)
        if self.mirror:
            inner = str(PurePosixPath(self.mirror) / PurePosixPath(*rel.parts[1:]))
            await asyncio.to_thread(
                self.sandbox.write_file, inner, content, 0o755 if rel.suffix == ".sh" else 0o644
            )
            return f"wrote {rel} (in the container: {inner})"
        return f"wrote {rel}"

"""litecoder's Harbor environment: every trial's containers, files and processes under
litecoder's control.

Harbor loads an environment class by import path (`environment.import_path` of a job), so
litecoder's trials (rollouts, evaluation, the oracle checks) run through this one instead of
Harbor's docker environment. It starts what the staged task's `TrialSpec` says and nothing else
(no compose file, no variable substitution, no host mount, no host environment), and every
byte that crosses the trial's boundary goes through the sandbox layer (`TrialContainers`):
command output bounded, files copied out as capped regular files, the reward file capped
smaller still, and the main container's processes killed before the verifier starts
(`LitecoderVerifier`, which litecoder's jobs name as their verifier).
What it refused or had to do is written to `<trial>/litecoder-env.json` when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from harbor.environments.base import BaseEnvironment, ExecResult
from harbor.environments.capabilities import (
    EnvironmentCapabilities,
    EnvironmentResourceCapabilities,
)
from harbor.models.trial.paths import EnvironmentPaths
from harbor.models.verifier.result import VerifierResult
from harbor.utils.path_filter import filter_paths_by_patterns
from harbor.verifier.verifier import Verifier

from litecoder.sandbox.trial import TrialContainers, TrialSpec, trial_key
from litecoder.trial_tokens import confine

ENV_REPORT = "litecoder-env.json"  # in each trial dir (litecoder.harbor.runner reads it)
REWARD_NAMES = ("reward.txt", "reward.json")

# Docker SDK calls block; trials share one generous pool (Harbor's default executor has a
# handful of threads, and a long verifier command must not hold up other trials' calls).
_POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="litecoder-env")
T = TypeVar("T")


class LitecoderEnvironment(BaseEnvironment):
    """Harbor's `BaseEnvironment` over `litecoder.sandbox.trial.TrialContainers`."""

    @staticmethod
    def type() -> str:
        return "litecoder-docker"

    @property
    def capabilities(self) -> EnvironmentCapabilities:
        # It cuts the network itself (network_mode none, or an internal network without a
        # host address); it mounts nothing and runs no compose file.
        return EnvironmentCapabilities(disable_internet=True)

    @classmethod
    def resource_capabilities(cls) -> EnvironmentResourceCapabilities:
        return EnvironmentResourceCapabilities(cpu_limit=True, memory_limit=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._host_mounts:
            raise ValueError("litecoder's trial environment mounts nothing from the host")
        self.spec = TrialSpec.read(self.environment_dir).for_run(os.environ)
        self.box = TrialContainers(self.spec, trial_key(self.session_id))
        self.trial = self.session_id.removesuffix("__env")
        self._verifier_hooked = False  # LitecoderVerifier calls before_verifier itself

    def _validate_definition(self) -> None:
        TrialSpec.read(self.environment_dir)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_POOL, lambda: fn(*args, **kwargs))

    # -- lifecycle --

    async def start(self, force_build: bool) -> None:
        try:
            await self._call(self.box.start)
        except BaseException:
            await self._call(self.box.stop)
            raise
        await self.ensure_dirs(self._mount_targets(writable_only=True))

    async def stop(self, delete: bool) -> None:
        try:
            await self._call(self.box.stop)
        finally:
            self._write_report()

    def _write_report(self) -> None:
        report = {
            "refused": [r.to_dict() for r in self.box.refused],
            **self.box.notes,
        }
        path = self.trial_paths.trial_dir / ENV_REPORT
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, path)

    # -- commands --

    async def exec(
        self,
        command: str,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_sec: int | None = None,
        user: str | int | None = None,
    ) -> ExecResult:
        who = self._resolve_user(user)
        # An installed agent's gateway key goes in as this trial's own token, never the
        # job's (litecoder.trial_tokens): a container can spend only as its trial.
        merged = {k: confine(v, self.trial) for k, v in (self._merge_env(env) or {}).items()}
        res = await self._call(
            self.box.exec,
            confine(command, self.trial),
            user=None if who is None else str(who),
            cwd=cwd or self.task_env_config.workdir,
            env=merged or None,
            timeout_s=timeout_sec,
        )
        if res.timed_out and timeout_sec:
            raise RuntimeError(f"Command timed out after {timeout_sec} seconds")
        return ExecResult(stdout=res.output or None, stderr=None, return_code=res.code)

    # -- files in --

    async def upload_file(self, source_path: Path | str, target_path: str) -> None:
        target = PurePosixPath(target_path)
        await self._call(self.box.put_path, Path(source_path), str(target.parent), target.name)

    async def upload_dir(self, source_dir: Path | str, target_dir: str) -> None:
        # Under Harbor's own verifier (no LitecoderVerifier in the job), the tests going in
        # is the first sign of a verification.
        tests = PurePosixPath(target_dir) == EnvironmentPaths.for_os(self.os).tests_dir
        if tests and not self._verifier_hooked:
            await self.before_verifier()
        await self._call(self.box.put_path, Path(source_dir), target_dir)

    async def before_verifier(self) -> None:
        """A verification starts: nothing the agent or the solution left running may touch its
        run (or hold every process slot, so that its first command cannot start), nothing
        planted in /tests or /logs/verifier may shape it."""
        if not self.spec.clean_before_verifier:
            return
        await self._call(self.box.restart_main)
        paths = EnvironmentPaths.for_os(self.os)
        await self.exec(
            f"rm -rf {paths.tests_dir} && mkdir -p {paths.verifier_dir} && "
            f"find {paths.verifier_dir} -mindepth 1 -delete && chmod 777 {paths.verifier_dir}",
            user="root",
        )

    # -- files out --

    async def download_file(self, source_path: str, target_path: Path | str) -> None:
        name = PurePosixPath(source_path).name
        cap = self.spec.reward_max_bytes if name in REWARD_NAMES else None
        await self._call(self.box.copy_file, source_path, Path(target_path), cap)

    async def download_dir(self, source_dir: str, target_dir: Path | str) -> None:
        extra = await self._call(self._rewards_first, source_dir, Path(target_dir))
        await self._call(self.box.copy_dir, source_dir, Path(target_dir), **extra)

    def _rewards_first(self, source_dir: str, target: Path) -> dict[str, Any]:
        """For the verifier's directory: the reward files are copied first, each on its own
        (capped small), so that nothing else in the directory can keep them from the host;
        the rest of the copy leaves them out."""
        if PurePosixPath(source_dir) != EnvironmentPaths.for_os(self.os).verifier_dir:
            return {}
        target.mkdir(parents=True, exist_ok=True)
        for name in REWARD_NAMES:
            with contextlib.suppress(FileNotFoundError):
                self.box.copy_file(
                    f"{source_dir}/{name}", target / name, self.spec.reward_max_bytes
                )
        return {"select": lambda rel: rel not in REWARD_NAMES}

    async def download_dir_filtered(
        self,
        *,
        source_dir: str,
        target_dir: Path | str,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        protect: Sequence[str] | None = None,
    ) -> None:
        def select(rel: str) -> bool:
            return bool(filter_paths_by_patterns([rel], include=include, exclude=exclude)) or (
                rel in (protect or ())
            )

        rewards = await self._call(self._rewards_first, source_dir, Path(target_dir))
        chosen = rewards.get("select", lambda _: True)
        await self._call(
            self.box.copy_dir,
            source_dir,
            Path(target_dir),
            select=lambda rel: chosen(rel) and select(rel),
        )

    async def _download_dir_with_exclusions_impl(
        self,
        *,
        source_dir: str,
        target_dir: Path | str,
        exclude: list[str],
        service: str | None,
    ) -> None:
        if not self.is_main_service(service):
            await super()._download_dir_with_exclusions_impl(
                source_dir=source_dir, target_dir=target_dir, exclude=exclude, service=service
            )  # raises: sidecar operations are not offered
            return

        def select(rel: str) -> bool:
            parts = rel.split("/")
            return not any(
                fnmatch(rel, p) or fnmatch(f"./{rel}", p) or any(fnmatch(x, p) for x in parts)
                for p in exclude
            )

        await self._call(self.box.copy_dir, source_dir, Path(target_dir), select=select)


class LitecoderVerifier(Verifier):
    """Harbor's verifier, started only after litecoder's environment has cleaned the trial
    (`before_verifier`). Harbor's first verifier command (removing stale reward files) comes
    before the tests go in: a fork bomb the agent left would otherwise hold every process slot
    and keep that command from starting, failing the trial as an error instead of a verdict."""

    async def verify(self) -> VerifierResult:
        env = self.environment
        if isinstance(env, LitecoderEnvironment):
            env._verifier_hooked = True
            await env.before_verifier()
        return await super().verify()

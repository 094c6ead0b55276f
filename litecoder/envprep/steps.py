"""The five steps that turn an accepted task into a Harbor task directory.

1. refine    the task text becomes a precise instruction with testable constraints (+ metadata)
2. setup     mode "container" (the preview): the agent builds the starting state inside a
             container, whose changed files are captured as environment/Dockerfile + files;
             mode "dockerfile" (the later release): the agent writes environment/ itself
3. solution  the agent writes solution/solve.sh, trying it on the starting state
4. verifier  the agent writes tests/test_outputs.py (tests/test.sh runs it, writes the reward)
5. config    task.toml from config (limits, timeouts, network) and the refine metadata
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from litecoder import base_image
from litecoder.envprep.capture import CaptureTooLarge, capture_state
from litecoder.envprep.core import EnvprepContext, Refined, StepFailed
from litecoder.envprep.executors import ContainerExecutor, TaskDirExecutor
from litecoder.harbor import compose
from litecoder.harbor.taskdir import render_dockerfile, task_toml
from litecoder.io import write_text
from litecoder.llm import parse_json_as
from litecoder.records import EnvOutcome, JudgedTask
from litecoder.sandbox import Sandbox


@contextlib.asynccontextmanager
async def _sandbox(
    ep: EnvprepContext, image: str, task_id: str, out: EnvOutcome
) -> AsyncIterator[Sandbox]:
    """A started sandbox for an agent step, removed after it; starting and removing it is
    timed as `sandbox_s` (the engine's container lifecycle, apart from the step's own work)."""
    sb = ep.sandbox(image, task_id)
    t0 = time.monotonic()
    try:
        await asyncio.to_thread(sb.start)
    finally:
        out.timings.sandbox_s += time.monotonic() - t0
    try:
        yield sb
    finally:
        t0 = time.monotonic()
        await asyncio.to_thread(sb.close)
        out.timings.sandbox_s += time.monotonic() - t0


async def refine(ep: EnvprepContext, task: JudgedTask, out: EnvOutcome) -> Refined:
    if "refine" not in ep.cfg.envprep.steps:
        return Refined(instruction=task.task or "", category=task.domain)
    p = ep.cfg.envprep.prompts.refine
    msgs = [
        {"role": "system", "content": p.system},
        {"role": "user", "content": p.user.format(domain=task.domain, task=task.task)},
    ]
    t0 = time.monotonic()
    res = await ep.client.chat_validated(
        msgs,
        lambda t: parse_json_as(t, Refined.model_validate),
        max_reasks=ep.cfg.envprep.agent.max_reasks,
        meta={"stage": "envprep", "step": "refine", "task_id": task.id},
        temperature=ep.cfg.envprep.agent.temperature,
        max_tokens=ep.cfg.envprep.agent.max_tokens,
    )
    out.timings.llm_s += time.monotonic() - t0
    out.tokens["prompt"] += res.prompt_tokens
    out.tokens["completion"] += res.completion_tokens
    if not res.ok or res.value is None:
        why = res.error or "no instruction"
        raise StepFailed("refine", f"llm_error: {why}" if res.error_kind == "api" else why)
    return res.value


async def setup(
    ep: EnvprepContext, task_id: str, refined: Refined, env_dir: Path, out: EnvOutcome
) -> None:
    e = ep.cfg.envprep
    image = base_image.sandbox_image(e.base_image)
    env_dir.mkdir(parents=True, exist_ok=True)
    async with _sandbox(ep, image, task_id, out) as sb:
        if e.mode == "container":
            await asyncio.to_thread(sb.exec, f"mkdir -p {shlex.quote(e.task.workdir)}")
            await ep.agent_step(
                "setup",
                "setup_container",
                ContainerExecutor(sb),
                out,
                task_id,
                instruction=refined.instruction,
            )
            t0 = time.monotonic()
            try:
                state = await asyncio.to_thread(capture_state, sb, e.capture, env_dir)
            except CaptureTooLarge as err:
                raise StepFailed("setup", str(err)) from None
            out.timings.commands_s += time.monotonic() - t0
            out.capture_refused = state.refused
            write_text(
                env_dir / "Dockerfile",
                render_dockerfile(e.base_image, workdir=e.task.workdir, **state.dockerfile_state()),
            )
        else:
            executor = TaskDirExecutor(env_dir.parent, "environment", sb, mirror=None)
            await ep.agent_step(
                "setup", "setup_dockerfile", executor, out, task_id, instruction=refined.instruction
            )
            if not (env_dir / "Dockerfile").exists():
                raise StepFailed("setup", "the agent wrote no environment/Dockerfile")


async def _in_sandbox(
    ep: EnvprepContext,
    task_id: str,
    image: str,
    task_dir: Path,
    out: EnvOutcome,
    *,
    step: str,
    writes: str,
    mount: str | None,
    **fields: Any,
) -> None:
    """An agent step in a fresh sandbox of the starting state: the agent writes `writes/`
    (mirrored at /`writes`), with `mount/` of the task dir copied in to read."""
    async with _sandbox(ep, image, task_id, out) as sb:
        if mount is not None:
            await asyncio.to_thread(sb.put_dir, task_dir / mount, f"/{mount}")
        ex = TaskDirExecutor(task_dir, writes, sb, mirror=f"/{writes}")
        await ep.agent_step(step, step, ex, out, task_id, **fields)


async def solution(
    ep: EnvprepContext, task_id: str, image: str, refined: Refined, task_dir: Path, out: EnvOutcome
) -> None:
    await _in_sandbox(ep, task_id, image, task_dir, out, step="solution", writes="solution",
                      mount=None, instruction=refined.instruction)  # fmt: skip
    if not (task_dir / "solution/solve.sh").exists():
        raise StepFailed("solution", "the agent wrote no solution/solve.sh")
    (task_dir / "solution/solve.sh").chmod(0o755)


async def verifier(
    ep: EnvprepContext, task_id: str, image: str, refined: Refined, task_dir: Path, out: EnvOutcome
) -> None:
    await _in_sandbox(
        ep, task_id, image, task_dir, out, step="verifier", writes="tests", mount="solution",
        instruction=refined.instruction, solution=(task_dir / "solution/solve.sh").read_text(),
    )  # fmt: skip
    if not (task_dir / "tests/test.sh").exists():
        if not (task_dir / "tests/test_outputs.py").exists():
            raise StepFailed(
                "verifier", "the agent wrote neither tests/test.sh nor tests/test_outputs.py"
            )
        write_text(task_dir / "tests/test.sh", ep.cfg.envprep.test_sh)
    (task_dir / "tests/test.sh").chmod(0o755)


ISOLATED_COMPOSE = (
    "# Written by litecoder: the task runs without network (litecoder's trial environment\n"
    "# enforces that itself; this keeps it so under a plain `harbor run`).\n"
    "services:\n  main:\n    network_mode: none\n"
)


async def near_miss(
    ep: EnvprepContext, task_id: str, image: str, refined: Refined, task_dir: Path, out: EnvOutcome
) -> None:
    """solution/near_miss.sh: a plausible wrong solution the verifier must fail (validation
    checks that it does). Optional: an agent that sees no such mistake writes none."""
    if "near_miss" not in ep.cfg.envprep.steps:
        return
    solve = task_dir / "solution/solve.sh"
    reference = solve.read_bytes()  # the reference solution is not this step's to change
    try:
        await _in_sandbox(ep, task_id, image, task_dir, out, step="near_miss", writes="solution",
                          mount="tests", instruction=refined.instruction)  # fmt: skip
    finally:
        solve.write_bytes(reference)
        solve.chmod(0o755)
    if (task_dir / "solution/near_miss.sh").is_file():
        (task_dir / "solution/near_miss.sh").chmod(0o755)


def config(ep: EnvprepContext, task_dir: Path, metadata: dict[str, Any]) -> None:
    """task.toml from config alone, and (for an isolated task) a compose file that only cuts
    the main container's network: litecoder's trial environment decides that itself, but a
    plain `harbor run` of the published dir (whose own no-network policy needs images it
    cannot get offline) stays cut off too. An agent's compose file is replaced."""
    t = ep.cfg.envprep.task
    write_text(task_dir / "task.toml", task_toml(t, metadata))
    env = task_dir / "environment"
    for name in compose.COMPOSE_NAMES:
        (env / name).unlink(missing_ok=True)
    if t.network == "isolated":
        write_text(env / "docker-compose.yaml", ISOLATED_COMPOSE)


def metadata(
    ep: EnvprepContext, task: JudgedTask, refined: Refined, fp: str, out: EnvOutcome
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "difficulty": refined.difficulty,
        "category": refined.category or task.domain,
        "tags": refined.tags,
    }
    if refined.expert_time_estimate_min is not None:
        meta["expert_time_estimate_min"] = refined.expert_time_estimate_min
    if refined.junior_time_estimate_min is not None:
        meta["junior_time_estimate_min"] = refined.junior_time_estimate_min
    meta["litecoder"] = {
        "task_id": task.id,
        "domain": task.domain,
        "subtopic": task.subtopic,
        "source_task": task.task,
        "mode": ep.cfg.envprep.mode,
        "fingerprint": fp,
        "checks": {k: v for k, v in out.checks.items() if v is not None},
    }
    return meta

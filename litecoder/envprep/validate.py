"""The checks a task directory must pass before it is an environment.

Static: layout, task.toml against Harbor's schema and the config, every COPY/ADD source in
the build context, nothing that would reach the host (`runner.refusals`: compose file,
task.toml templates, URLs fetched at build time, links). Dynamic: the image builds from
the directory alone (confined builder), the verifier FAILS on the untouched starting state,
the solution PASSES it, and a real Harbor trial of the oracle agent gives reward 1.0.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from litecoder.envprep.core import EnvprepContext, StepFailed
from litecoder.harbor import runner, verifier
from litecoder.harbor.taskdir import check_copy_sources, check_layout, check_task_toml
from litecoder.io import tail
from litecoder.records import EnvOutcome
from litecoder.sandbox import BuildError, build_image, image_labels

CHECKS = [
    "copy_sources",
    "build",
    "task_toml",
    "compose",
    "start_state_fails",
    "solution_passes",
    *(f"verifier_{c}" for c in verifier.CHECKS),
    "harbor_oracle",
]


def image_tag(task_id: str, env_dir: Path) -> str:
    """The same tag the Harbor runner gives this environment: its trials reuse the image."""
    return runner.image_tag(task_id, runner.env_hash(env_dir))


async def build(ep: EnvprepContext, task_id: str, env_dir: Path, out: EnvOutcome) -> str:
    errors = check_copy_sources(env_dir)
    out.checks["copy_sources"] = not errors
    if errors:
        raise StepFailed("validate:copy_sources", "; ".join(errors))
    tag = image_tag(task_id, env_dir)
    t0 = time.monotonic()
    try:
        await asyncio.to_thread(
            build_image,
            ep.docker,
            env_dir,
            tag,
            image_labels(ep.run_id, task_id, "task-image"),
            ep.cfg.envprep.task.build_timeout_sec,
            ep.build_limits(),
        )
    except BuildError as err:
        out.checks["build"] = False
        raise StepFailed("validate:build", f"{err} [{tail(err.log_tail, 4)}]") from None
    finally:
        out.timings.build_s += time.monotonic() - t0
    out.checks["build"] = True
    return tag


def static(ep: EnvprepContext, task_dir: Path, out: EnvOutcome) -> None:
    e = ep.cfg.envprep
    errors = check_layout(task_dir) + check_task_toml(task_dir / "task.toml", e.task)
    out.checks["task_toml"] = not errors
    if errors:
        raise StepFailed("validate:task_toml", "; ".join(errors))
    errors = runner.refusals(task_dir)
    out.checks["compose"] = not errors
    if errors:
        raise StepFailed("validate:compose", "; ".join(errors))


async def in_image(
    ep: EnvprepContext, image: str, task_id: str, task_dir: Path, *, solve: bool, runs: int = 1
) -> tuple[float | None, str, list[float | None]]:
    """Reward of tests/test.sh in a fresh container of the image (after solve.sh if asked),
    the log, and the rewards of `runs` verifier runs in a row (the first is the reward)."""
    t = ep.cfg.envprep.task
    sb = ep.sandbox(image, task_id, kind="check")
    await asyncio.to_thread(sb.start)
    try:
        log_text = ""
        if solve:
            await asyncio.to_thread(sb.put_dir, task_dir / "solution", "/solution")
            r = await asyncio.to_thread(
                sb.exec, "bash /solution/solve.sh", t.agent_timeout_sec, t.workdir
            )
            log_text += f"solve.sh exit {r.exit_code}: {r.output[-500:]}\n"
        await asyncio.to_thread(sb.put_dir, task_dir / "tests", "/tests")
        r = await asyncio.to_thread(
            sb.exec, "bash /tests/test.sh", t.verifier_timeout_sec, t.workdir
        )
        log_text += r.output[-1500:]
        raw = await asyncio.to_thread(sb.read_file, "/logs/verifier/reward.txt", 4096)
        rewards = [await asyncio.to_thread(verifier.read_reward, sb)]
        for _ in range(runs - 1):  # the same end state, verified again
            await asyncio.to_thread(
                sb.exec, "rm -f /logs/verifier/reward.txt /logs/verifier/reward.json"
            )
            await asyncio.to_thread(sb.put_dir, task_dir / "tests", "/tests")
            await asyncio.to_thread(
                sb.exec, "bash /tests/test.sh", t.verifier_timeout_sec, t.workdir
            )
            rewards.append(await asyncio.to_thread(verifier.read_reward, sb))
        try:
            return float((raw or b"").decode(errors="replace").strip()), log_text, rewards
        except ValueError:
            why = r.violation or f"test.sh exit {r.exit_code}"
            got = "missing or not a regular file" if raw is None else repr(raw[:100])
            return None, log_text + f"\n(/logs/verifier/reward.txt: {got}; {why})", rewards
    finally:
        await asyncio.to_thread(sb.close)


async def verifier_strength(
    ep: EnvprepContext,
    image: str,
    task_id: str,
    task_dir: Path,
    out: EnvOutcome,
    twice: list[float | None],
) -> None:
    """The checks of `litecoder.harbor.verifier`, recorded in the outcome (and task.toml);
    a required one that fails fails the environment."""
    t, v = ep.cfg.envprep.task, ep.cfg.envprep.validate_

    def make() -> Any:
        return ep.sandbox(image, task_id, kind="check")

    edited, forge = await asyncio.to_thread(
        verifier.forged, make, task_dir, verify_timeout_s=t.verifier_timeout_sec,
        workdir=t.workdir,
    )  # fmt: skip
    s = verifier.judge(verifier.Strength(), twice, edited, forge)
    await asyncio.to_thread(
        verifier.near_miss, s, make, task_dir, solve_timeout_s=t.agent_timeout_sec,
        verify_timeout_s=t.verifier_timeout_sec, workdir=t.workdir,
    )  # fmt: skip
    out.checks.update(s.to_checks())
    failed = s.failed(v.require)
    if failed:
        raise StepFailed("validate:verifier_strength", f"weak verifier ({', '.join(failed)}): "
                         + s.notes.rstrip("; "))  # fmt: skip


def harbor_oracle(ep: EnvprepContext, task_dir: Path, work: Path) -> tuple[float | None, str]:
    """A real Harbor trial of the oracle agent on the staged task (litecoder's limits)."""
    # A fresh check every time (the task may have changed since the last one).
    shutil.rmtree(work / "harbor", ignore_errors=True)
    (work / "oracle.log").unlink(missing_ok=True)
    job_dir, _, _ = runner.run_job(
        name="oracle",
        jobs_dir=work / "harbor",
        work=work,
        tasks=[task_dir],
        agents=[{"name": "oracle"}],
        n_attempts=1,
        n_concurrent=1,
        env=runner.harbor_env(pass_env=ep.cfg.environment.pass_env),
        policy=ep.policy(),
        environment=runner.environment_config(ep.cfg),
        build_timeout_s=ep.cfg.envprep.task.build_timeout_sec,
        harbor_timeout_s=ep.cfg.envprep.validate_.harbor_timeout_s,
        local=ep.cfg.environment.local,
        partial_ok=True,
        client=ep.docker,
    )
    results = runner.trial_results(job_dir)
    if not results:
        log_tail = tail((work / "oracle.log").read_text(errors="replace"), 4)
        return None, f"harbor wrote no trial result: {log_tail}"
    res = results[0]
    if res.exception_info:
        exc = res.exception_info
        return None, f"{exc.exception_type}: {str(exc.exception_message)[:300]}"
    return runner.reward(res), "ok"


async def validate(
    ep: EnvprepContext, image: str, task_id: str, task_dir: Path, out: EnvOutcome
) -> None:
    t0 = time.monotonic()
    try:
        static(ep, task_dir, out)
        reward, log_text, _ = await in_image(ep, image, task_id, task_dir, solve=False)
        out.checks["start_state_fails"] = reward == 0.0
        if reward != 0.0:
            why = (
                "the verifier passes on the untouched starting state"
                if reward
                else "the verifier wrote no reward"
            )
            raise StepFailed("validate:start_state_fails", f"{why}: {log_text[-300:]}")
        v = ep.cfg.envprep.validate_
        reward, log_text, twice = await in_image(
            ep, image, task_id, task_dir, solve=True, runs=2 if v.verifier_strength else 1
        )
        out.checks["solution_passes"] = reward == 1.0
        if reward != 1.0:
            raise StepFailed(
                "validate:solution_passes", f"reward {reward} after solve.sh: {log_text[-400:]}"
            )
        if v.verifier_strength:
            await verifier_strength(ep, image, task_id, task_dir, out, twice)
        if ep.cfg.envprep.validate_.harbor_oracle:
            try:
                reward, why = await asyncio.to_thread(
                    harbor_oracle, ep, task_dir, task_dir.parent / "oracle"
                )
            except runner.TaskRejected as err:
                reward, why = None, "; ".join(err.reasons)
            out.checks["harbor_oracle"] = reward
            if reward != 1.0:
                raise StepFailed("validate:harbor_oracle", f"reward {reward}: {why}")
    finally:
        out.timings.validation_s += time.monotonic() - t0

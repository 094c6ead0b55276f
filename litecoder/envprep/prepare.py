"""One task through every step and check, committed to a work area keyed by a fingerprint of
task + config, so a killed run resumes where it stopped (LLM calls come back from the cache)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from litecoder.config import Config
from litecoder.envprep import steps
from litecoder.envprep.core import EnvprepContext, StepFailed
from litecoder.envprep.validate import build, validate
from litecoder.io import write_json, write_text
from litecoder.records import EnvOutcome, JudgedTask, Splits
from litecoder.sandbox import SandboxError

log = logging.getLogger(__name__)
VERSION = 3  # bump when the stage's output format changes: invalidates the work area


def fingerprint(cfg: Config, task: JudgedTask) -> str:
    agent = cfg.teacher("agent").model_dump(
        exclude={"limits", "base_url", "timeout_s", "max_wait_s", "preflight"}
    )
    payload = {
        "v": VERSION,
        "task": task.model_dump(include={"id", "domain", "subtopic", "task"}),
        "envprep": cfg.envprep.model_dump(
            exclude={"concurrency", "heldout_fraction", "keep_images", "shard"}
        ),
        "security": cfg.security.model_dump(),
        "agent": agent,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def remove_stale(work: Path) -> None:
    """Half-done tasks of runs that were killed (their process is gone)."""
    for stale in work.glob(".tmp-*"):
        pid = stale.name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and Path(f"/proc/{pid}").exists():
            continue  # another live run's task in progress
        shutil.rmtree(stale, ignore_errors=True)


def in_shard(task_id: str, i: int, n: int) -> bool:
    return int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16) % n == i


def split(ok_ids: list[str], fraction: float) -> Splits:
    """Held-out environments for evaluation: a stable, hash-ordered share."""
    order = sorted(ok_ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    n = round(len(order) * fraction)
    if fraction > 0 and len(order) >= 2:
        n = max(1, n)
    held = set(order[:n])
    return Splits(train=sorted(i for i in ok_ids if i not in held), heldout=sorted(held))


async def _steps(
    ep: EnvprepContext, task: JudgedTask, fp: str, task_dir: Path, out: EnvOutcome
) -> None:
    task_id = task.id
    refined = await steps.refine(ep, task, out)
    write_text(task_dir / "instruction.md", refined.instruction.strip() + "\n")
    if ep.decontam is not None and (hit := ep.decontam.match(refined.instruction)):
        raise StepFailed("decontam", f"repeats {hit.name} ({hit.how} {hit.score})")
    await steps.setup(ep, task_id, refined, task_dir / "environment", out)
    image = await build(ep, task_id, task_dir / "environment", out)
    await steps.solution(ep, task_id, image, refined, task_dir, out)
    await steps.verifier(ep, task_id, image, refined, task_dir, out)
    await steps.near_miss(ep, task_id, image, refined, task_dir, out)
    steps.config(ep, task_dir, steps.metadata(ep, task, refined, fp, out))
    await validate(ep, image, task_id, task_dir, out)
    # Record the checks in the task's own metadata.
    steps.config(ep, task_dir, steps.metadata(ep, task, refined, fp, out))
    if not ep.cfg.envprep.keep_images:
        await asyncio.to_thread(_remove_image, ep.docker, image)


def _remove_image(docker: Any, image: str) -> None:
    try:
        docker.images.remove(image, force=True)
    except Exception as e:  # the image may be in use by a sweep member
        log.debug("could not remove %s: %s", image, e)


async def prepare(ep: EnvprepContext, task: JudgedTask, fp: str) -> EnvOutcome:
    out = EnvOutcome(task_id=task.id, domain=task.domain)
    # The owner's pid in the name: a run clears only what dead runs left (shards and sweep
    # members share the work area).
    tmp = ep.work / f".tmp-{os.getpid()}-{fp}-{uuid.uuid4().hex[:6]}"
    start = time.monotonic()
    timeout = ep.cfg.envprep.sandbox.task_timeout_s
    try:
        async with asyncio.timeout(timeout):
            await _steps(ep, task, fp, tmp / "env", out)
        out.status = "ok"
    except StepFailed as e:
        out.step, out.reason = e.step, e.reason
    except TimeoutError:
        out.step, out.reason = "timeout", f"task took longer than {timeout}s"
    except SandboxError as e:
        out.step, out.reason = "sandbox", str(e)
    except Exception as e:  # one task's bug must not take the stage down
        log.exception("envprep of %s crashed", task.id)
        out.step, out.reason = "internal", f"{type(e).__name__}: {e}"
    out.timings.total_s = time.monotonic() - start
    if (out.reason or "").startswith("llm_error") or out.step == "decontam":
        # The endpoint failed, not the task, or the verdict depends on the benchmarks in
        # config (not in the fingerprint): nothing is committed, a re-run decides again.
        shutil.rmtree(tmp, ignore_errors=True)
        return out
    # Commit: the work entry appears whole or not at all.
    final = ep.work / fp
    write_json(tmp / "outcome.json", out.record())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return out


async def prepare_all(ep: EnvprepContext, tasks: list[JudgedTask], bar: Any) -> list[EnvOutcome]:
    sem = asyncio.Semaphore(ep.cfg.envprep.concurrency)

    async def one(task: JudgedTask) -> EnvOutcome:
        fp = fingerprint(ep.cfg, task)
        done = ep.work / fp / "outcome.json"
        if done.exists():  # finished before (this run was resumed)
            bar.advance()
            return EnvOutcome.model_validate_json(done.read_text())
        async with sem:
            outcome = await prepare(ep, task, fp)
        bar.advance()
        log.info(
            "%s %s%s",
            task.id,
            outcome.status,
            f" ({outcome.step}: {outcome.reason})" if outcome.reason else "",
        )
        return outcome

    async with ep.client:
        return list(await asyncio.gather(*(one(t) for t in tasks)))

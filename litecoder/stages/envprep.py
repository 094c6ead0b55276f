"""Stage `envprep`: accepted tasks -> validated, runnable Harbor task directories.

Per task, with the agent model (`models.agent`) acting through `litecoder.agent` in sandbox
containers (`litecoder.sandbox`):

1. refine    the task text becomes a precise instruction with testable constraints (+ metadata)
2. setup     mode "container" (the preview): the agent builds the starting state inside a
             container, whose changed files are extracted as environment/Dockerfile + files;
             mode "dockerfile" (the later release): the agent writes environment/ itself
3. solution  the agent writes solution/solve.sh, trying it on the starting state
4. verifier  the agent writes tests/test_outputs.py (tests/test.sh runs it, writes the reward)
5. config    task.toml from config (limits, timeouts, network) and the refine metadata

Then every directory is validated: task.toml matches Harbor's schema and the config, every
COPY/ADD source exists, the image builds from the directory alone, the verifier FAILS on the
untouched starting state, the solution PASSES it, and `harbor run -a oracle` gives 1.0. A task
that fails any step lands in data/envs/failed.jsonl with the step and the reason.

Finished tasks (passed or failed) are kept in a work area keyed by a fingerprint of task +
config, so a killed run resumes where it stopped; LLM calls come back from the response cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import shlex
import shutil
import socket
import tarfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, Field

from litecoder import base_image
from litecoder.agent import AgentResult, run_agent
from litecoder.config import Config
from litecoder.context import StageContext
from litecoder.io import read_jsonl, tail, write_json, write_jsonl, write_text
from litecoder.llm import LLMClient, parse_json_object
from litecoder.sandbox import (
    LABEL,
    BuildError,
    ExecResult,
    Limits,
    Sandbox,
    SandboxError,
    build_image,
    cleanup_on_signals,
    docker_client,
    labels,
    remove_labelled,
)
from litecoder.taskdir import (
    check_copy_sources,
    check_layout,
    check_task_toml,
    compose_override,
    die_with_parent,
    harbor_bin,
    harbor_env,
    reap_trials,
    render_dockerfile,
    task_toml,
)
from litecoder.tracking import StageRun, progress

log = logging.getLogger(__name__)
VERSION = 2  # bump when the stage's output format changes: invalidates the work area


class StepFailed(Exception):
    def __init__(self, step: str, reason: str):
        super().__init__(f"{step}: {reason}")
        self.step, self.reason = step, reason


class Refined(BaseModel):
    instruction: str = Field(min_length=20)
    difficulty: str = "medium"
    category: str = ""
    tags: list[str] = Field(default_factory=list)
    expert_time_estimate_min: float | None = None
    junior_time_estimate_min: float | None = None


@dataclass
class Timings:
    llm_s: float = 0.0
    build_s: float = 0.0
    commands_s: float = 0.0
    validation_s: float = 0.0
    total_s: float = 0.0

    def add_agent(self, r: AgentResult) -> None:
        self.llm_s += r.llm_s
        self.commands_s += r.command_s


@dataclass
class TaskOutcome:
    task_id: str
    domain: str
    status: str  # ok | failed
    step: str | None = None
    reason: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d["timings"] = {k: round(v, 3) for k, v in d["timings"].items()}
        return d


# --- executors: where the agent's actions land --------------------------------------------


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
    in a container (solution/verifier: of the starting state; dockerfile setup: of the base)."""

    def __init__(self, task_dir: Path, prefix: str, sandbox: Sandbox, mirror: str | None):
        self.task_dir, self.prefix, self.sandbox, self.mirror = task_dir, prefix, sandbox, mirror

    async def run(self, command: str) -> ExecResult:
        return await asyncio.to_thread(self.sandbox.exec, command)

    async def write_file(self, path: str, content: str) -> str:
        rel = PurePosixPath(path.lstrip("/"))
        if rel.parts[:1] != (self.prefix,) or ".." in rel.parts:
            return f"error: in this step you may only write files under {self.prefix}/ (not {path})"
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


# --- capturing a container's state ----------------------------------------------------------


def _excluded(path: str, exclude: list[str], names: list[str]) -> bool:
    p = PurePosixPath(path)
    if any(part in names for part in p.parts):
        return True
    return any(path == e or path.startswith(e.rstrip("/") + "/") for e in exclude)


def capture_state(sandbox: Sandbox, cfg: Config, env_dir: Path) -> dict[str, Any]:
    """Extract what the agent changed (docker diff) into env_dir/files/ (modes, mtimes kept)."""
    cap = cfg.envprep.capture
    changes = [
        c for c in sandbox.diff() if not _excluded(c["Path"], cap.exclude, cap.exclude_names)
    ]
    kind = {c["Path"]: c["Kind"] for c in changes}  # 0 changed, 1 added, 2 deleted
    deleted = [p for p, k in kind.items() if k == 2 and kind.get(str(PurePosixPath(p).parent)) != 2]
    present = [p for p, k in kind.items() if k in (0, 1)]
    if not present:
        return {"has_files": False, "deleted": deleted, "owners": {}, "modes": {}, "empty_dirs": []}
    listing = sandbox.exec(
        'while IFS= read -r p; do if [ -d "$p" ] && [ ! -L "$p" ]; then echo "d $p"; '
        "else echo \"f $p\"; fi; done <<'EOF'\n" + "\n".join(present) + "\nEOF"
    ).output.splitlines()
    is_dir = {ln[2:] for ln in listing if ln.startswith("d ")}
    roots = []
    for p in present:
        parent = str(PurePosixPath(p).parent)
        if kind[p] == 1 and kind.get(parent) != 1:
            roots.append(p)  # a new file or tree whose parent existed before
        elif kind[p] == 0 and p not in is_dir:
            roots.append(p)  # a changed file (changed directories are just containers)
    files_dir = env_dir / "files"
    owners: dict[str, str] = {}
    special: dict[str, str] = {}
    empty_dirs: list[str] = []
    total = 0
    for root in sorted(roots):
        data = sandbox.get_archive(root)
        total += len(data)
        if total > cap.max_bytes:
            raise StepFailed("setup", f"starting state is larger than {cap.max_bytes} bytes")
        dest = files_dir / str(PurePosixPath(root).parent).lstrip("/")
        dest.mkdir(parents=True, exist_ok=True)
        base = str(PurePosixPath(root).parent)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = []
            for m in tar.getmembers():
                name = PurePosixPath(m.name)
                if (
                    name.is_absolute()
                    or ".." in name.parts
                    or not (m.isfile() or m.isdir() or m.issym())
                ):
                    continue
                abs_path = str(PurePosixPath(base) / name)
                if _excluded(abs_path, cap.exclude, cap.exclude_names):
                    continue
                if m.uid or m.gid:
                    owners[abs_path] = f"{m.uid}:{m.gid}"
                    if m.mode & 0o7000 and not m.issym():  # chown clears setuid/setgid
                        special[abs_path] = f"{m.mode & 0o7777:o}"
                members.append(m)
            tar.extractall(dest, members=members, filter="fully_trusted")
    for d in files_dir.rglob("*"):
        if d.is_dir() and not any(d.iterdir()):
            empty_dirs.append("/" + str(d.relative_to(files_dir)))
    return {
        "has_files": True,
        "deleted": deleted,
        "owners": owners,
        "modes": special,
        "empty_dirs": empty_dirs,
    }


# --- one task -----------------------------------------------------------------------------


@dataclass
class Envprep:
    ctx: StageContext
    client: LLMClient
    docker: Any
    run_id: str
    work: Path

    @property
    def cfg(self) -> Config:
        return self.ctx.cfg

    def limits(self) -> Limits:
        s = self.cfg.envprep.sandbox
        return Limits(
            cpus=s.cpus,
            memory_mb=s.memory_mb,
            pids=s.pids,
            network=s.network,
            command_timeout_s=s.command_timeout_s,
            output_chars=self.cfg.envprep.agent.observation_chars * 4,
        )

    def sandbox(self, image: str, task_id: str, kind: str = "scratch") -> Sandbox:
        owner = {f"{LABEL}.pid": str(os.getpid()), f"{LABEL}.host": socket.gethostname()}
        return Sandbox(
            image,
            self.limits(),
            labels(self.run_id, task_id, kind) | owner,
            client=self.docker,
            workdir="/",
        )

    def prompt(self, step: str, **fields: Any) -> tuple[str, str]:
        p = self.cfg.envprep.prompts
        sp = getattr(p, step)
        actions = p.actions.replace(
            "{command_timeout_s}", str(int(self.cfg.envprep.sandbox.command_timeout_s))
        )
        fields.setdefault("base_image", self.cfg.envprep.base_image.name)
        return sp.system.format(**fields) + "\n\n" + actions, sp.user.format(**fields)

    async def agent_step(
        self, step: str, prompt_key: str, executor: Any, out: TaskOutcome, **fields: Any
    ) -> AgentResult:
        system, user = self.prompt(prompt_key, **fields)
        res = await run_agent(self.client, self.cfg.envprep.agent, system, user, executor)
        out.timings.add_agent(res)
        out.tokens["prompt"] += res.prompt_tokens
        out.tokens["completion"] += res.completion_tokens
        if not res.ok:
            raise StepFailed(step, f"{res.status}: {res.reason}")
        return res

    async def refine(self, task: dict[str, Any], out: TaskOutcome) -> Refined:
        if "refine" not in self.cfg.envprep.steps:
            return Refined(instruction=task["task"], category=task["domain"])
        p = self.cfg.envprep.prompts.refine
        msgs = [
            {"role": "system", "content": p.system},
            {"role": "user", "content": p.user.format(domain=task["domain"], task=task["task"])},
        ]
        t0 = time.monotonic()
        res = await self.client.chat_validated(
            msgs,
            lambda t: Refined.model_validate(parse_json_object(t)),
            max_reasks=self.cfg.envprep.agent.max_reasks,
            temperature=self.cfg.envprep.agent.temperature,
            max_tokens=self.cfg.envprep.agent.max_tokens,
        )
        out.timings.llm_s += time.monotonic() - t0
        out.tokens["prompt"] += res.prompt_tokens
        out.tokens["completion"] += res.completion_tokens
        if not res.ok or res.value is None:
            raise StepFailed("refine", res.error or "no instruction")
        return res.value

    async def setup(self, task_id: str, refined: Refined, env_dir: Path, out: TaskOutcome) -> None:
        e = self.cfg.envprep
        image = base_image.sandbox_image(e.base_image)
        env_dir.mkdir(parents=True, exist_ok=True)
        sb = self.sandbox(image, task_id)
        await asyncio.to_thread(sb.start)
        try:
            if e.mode == "container":
                await asyncio.to_thread(sb.exec, f"mkdir -p {shlex.quote(e.task.workdir)}")
                await self.agent_step(
                    "setup",
                    "setup_container",
                    ContainerExecutor(sb),
                    out,
                    instruction=refined.instruction,
                )
                t0 = time.monotonic()
                state = await asyncio.to_thread(capture_state, sb, self.cfg, env_dir)
                out.timings.commands_s += time.monotonic() - t0
                write_text(
                    env_dir / "Dockerfile",
                    render_dockerfile(e.base_image, workdir=e.task.workdir, **state),
                )
            else:
                executor = TaskDirExecutor(env_dir.parent, "environment", sb, mirror=None)
                await self.agent_step(
                    "setup", "setup_dockerfile", executor, out, instruction=refined.instruction
                )
                if not (env_dir / "Dockerfile").exists():
                    raise StepFailed("setup", "the agent wrote no environment/Dockerfile")
        finally:
            await asyncio.to_thread(sb.close)
        if not (env_dir / "docker-compose.yaml").exists():
            write_text(
                env_dir / "docker-compose.yaml", compose_override(e.task.network == "isolated")
            )

    async def build(self, task_id: str, fp: str, env_dir: Path, out: TaskOutcome) -> str:
        errors = check_copy_sources(env_dir)
        out.checks["copy_sources"] = not errors
        if errors:
            raise StepFailed("validate:copy_sources", "; ".join(errors))
        tag = f"litecoder-task/{task_id}:{fp[:12]}"
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(
                build_image,
                self.docker,
                env_dir,
                tag,
                labels(self.run_id, task_id, "task-image"),
                self.cfg.envprep.task.build_timeout_sec,
            )
        except BuildError as err:
            out.checks["build"] = False
            raise StepFailed("validate:build", f"{err} [{tail(err.log_tail, 4)}]") from None
        finally:
            out.timings.build_s += time.monotonic() - t0
        out.checks["build"] = True
        return tag

    async def in_image(
        self, image: str, task_id: str, task_dir: Path, *, solve: bool
    ) -> tuple[float | None, str]:
        """Reward of tests/test.sh in a fresh container of the image (after solve.sh if asked)."""
        sb = self.sandbox(image, task_id, kind="check")
        await asyncio.to_thread(sb.start)
        try:
            log_text = ""
            if solve:
                await asyncio.to_thread(sb.put_dir, task_dir / "solution", "/solution")
                r = await asyncio.to_thread(
                    sb.exec,
                    "bash /solution/solve.sh",
                    self.cfg.envprep.task.agent_timeout_sec,
                    self.cfg.envprep.task.workdir,
                )
                log_text += f"solve.sh exit {r.exit_code}: {r.output[-500:]}\n"
            await asyncio.to_thread(sb.put_dir, task_dir / "tests", "/tests")
            r = await asyncio.to_thread(
                sb.exec,
                "bash /tests/test.sh",
                self.cfg.envprep.task.verifier_timeout_sec,
                self.cfg.envprep.task.workdir,
            )
            log_text += r.output[-1500:]
            reward = await asyncio.to_thread(sb.exec, "cat /logs/verifier/reward.txt")
            try:
                return float(reward.output.strip()), log_text
            except ValueError:
                return None, log_text + "\n(no /logs/verifier/reward.txt)"
        finally:
            await asyncio.to_thread(sb.close)

    async def harbor_oracle(self, task_dir: Path, work: Path) -> tuple[float | None, str]:
        jobs = work / "harbor"
        cmd = [
            harbor_bin(),
            "run",
            "-p",
            str(task_dir),
            "-a",
            "oracle",
            "-o",
            str(jobs),
            "--job-name",
            "oracle",
            "-n",
            "1",
            "-q",
            "-y",
        ]
        env = harbor_env()
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent,
        )
        try:
            stdout, _ = await asyncio.wait_for(
                proc.communicate(), self.cfg.envprep.validate_.harbor_timeout_s
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None, "harbor run timed out"
        finally:
            await asyncio.to_thread(reap_trials, jobs / "oracle")
        results = list((jobs / "oracle").glob("*/result.json"))
        if not results:
            return (
                None,
                f"harbor wrote no trial result (exit {proc.returncode}): {stdout.decode()[-400:]}",
            )
        res = json.loads(results[0].read_text())
        if res.get("exception_info"):
            exc = res["exception_info"]
            return None, f"{exc.get('exception_type')}: {str(exc.get('exception_message'))[:300]}"
        rewards = (res.get("verifier_result") or {}).get("rewards") or {}
        return rewards.get("reward"), "ok"

    async def prepare(self, task: dict[str, Any], fp: str) -> TaskOutcome:
        task_id = task["id"]
        out = TaskOutcome(task_id=task_id, domain=task["domain"], status="failed")
        tmp = self.work / f".tmp-{fp}-{uuid.uuid4().hex[:6]}"
        task_dir = tmp / "env"
        start = time.monotonic()
        try:
            async with asyncio.timeout(self.cfg.envprep.sandbox.task_timeout_s):
                await self._steps(task, fp, task_dir, out)
            out.status = "ok"
        except StepFailed as e:
            out.step, out.reason = e.step, e.reason
        except TimeoutError:
            out.step, out.reason = (
                "timeout",
                f"task took longer than {self.cfg.envprep.sandbox.task_timeout_s}s",
            )
        except SandboxError as e:
            out.step, out.reason = "sandbox", str(e)
        except Exception as e:  # one task's bug must not take the stage down
            log.exception("envprep of %s crashed", task_id)
            out.step, out.reason = "internal", f"{type(e).__name__}: {e}"
        out.timings.total_s = time.monotonic() - start
        # Commit: the work entry appears whole or not at all.
        final = self.work / fp
        write_json(tmp / "outcome.json", out.record())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return out

    async def _steps(self, task: dict[str, Any], fp: str, task_dir: Path, out: TaskOutcome) -> None:
        e = self.cfg.envprep
        task_id = task["id"]
        refined = await self.refine(task, out)
        write_text(task_dir / "instruction.md", refined.instruction.strip() + "\n")
        await self.setup(task_id, refined, task_dir / "environment", out)
        image = await self.build(task_id, fp, task_dir / "environment", out)

        # solution: the agent works in a container of the starting state
        sb = self.sandbox(image, task_id)
        await asyncio.to_thread(sb.start)
        try:
            ex = TaskDirExecutor(task_dir, "solution", sb, mirror="/solution")
            await self.agent_step("solution", "solution", ex, out, instruction=refined.instruction)
        finally:
            await asyncio.to_thread(sb.close)
        if not (task_dir / "solution/solve.sh").exists():
            raise StepFailed("solution", "the agent wrote no solution/solve.sh")

        sb = self.sandbox(image, task_id)
        await asyncio.to_thread(sb.start)
        try:
            await asyncio.to_thread(sb.put_dir, task_dir / "solution", "/solution")
            ex = TaskDirExecutor(task_dir, "tests", sb, mirror="/tests")
            await self.agent_step(
                "verifier",
                "verifier",
                ex,
                out,
                instruction=refined.instruction,
                solution=(task_dir / "solution/solve.sh").read_text(),
            )
        finally:
            await asyncio.to_thread(sb.close)
        if not (task_dir / "tests/test.sh").exists():
            if not (task_dir / "tests/test_outputs.py").exists():
                raise StepFailed(
                    "verifier", "the agent wrote neither tests/test.sh nor tests/test_outputs.py"
                )
            write_text(task_dir / "tests/test.sh", e.test_sh)
        (task_dir / "tests/test.sh").chmod(0o755)
        (task_dir / "solution/solve.sh").chmod(0o755)

        metadata = self.metadata(task, refined, fp, out)
        write_text(task_dir / "task.toml", task_toml(e.task, metadata))

        # validation
        t0 = time.monotonic()
        try:
            errors = check_layout(task_dir) + check_task_toml(task_dir / "task.toml", e.task)
            out.checks["task_toml"] = not errors
            if errors:
                raise StepFailed("validate:task_toml", "; ".join(errors))
            reward, log_text = await self.in_image(image, task_id, task_dir, solve=False)
            out.checks["start_state_fails"] = reward == 0.0
            if reward != 0.0:
                why = (
                    "the verifier passes on the untouched starting state"
                    if reward
                    else "the verifier wrote no reward"
                )
                raise StepFailed("validate:start_state_fails", f"{why}: {log_text[-300:]}")
            reward, log_text = await self.in_image(image, task_id, task_dir, solve=True)
            out.checks["solution_passes"] = reward == 1.0
            if reward != 1.0:
                raise StepFailed(
                    "validate:solution_passes", f"reward {reward} after solve.sh: {log_text[-400:]}"
                )
            if e.validate_.harbor_oracle:
                reward, why = await self.harbor_oracle(task_dir, task_dir.parent)
                out.checks["harbor_oracle"] = reward
                if reward != 1.0:
                    raise StepFailed("validate:harbor_oracle", f"reward {reward}: {why}")
        finally:
            out.timings.validation_s += time.monotonic() - t0
        # Record the checks in the task's own metadata.
        write_text(task_dir / "task.toml", task_toml(e.task, self.metadata(task, refined, fp, out)))
        if not e.keep_images:
            with contextlib.suppress(Exception):
                self.docker.images.remove(image, force=True)

    def metadata(
        self, task: dict[str, Any], refined: Refined, fp: str, out: TaskOutcome
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "difficulty": refined.difficulty,
            "category": refined.category or task["domain"],
            "tags": refined.tags,
        }
        if refined.expert_time_estimate_min is not None:
            meta["expert_time_estimate_min"] = refined.expert_time_estimate_min
        if refined.junior_time_estimate_min is not None:
            meta["junior_time_estimate_min"] = refined.junior_time_estimate_min
        meta["litecoder"] = {
            "task_id": task["id"],
            "domain": task["domain"],
            "subtopic": task["subtopic"],
            "source_task": task["task"],
            "mode": self.cfg.envprep.mode,
            "fingerprint": fp,
            "checks": {k: v for k, v in out.checks.items() if v is not None},
        }
        return meta


# --- the stage ----------------------------------------------------------------------------


def fingerprint(cfg: Config, task: dict[str, Any]) -> str:
    agent = cfg.teacher("agent").model_dump(
        exclude={"limits", "base_url", "timeout_s", "max_retries"}
    )
    payload = {
        "v": VERSION,
        "task": {k: task[k] for k in ("id", "domain", "subtopic", "task")},
        "envprep": cfg.envprep.model_dump(
            exclude={"concurrency", "heldout_fraction", "keep_images"}
        ),
        "agent": agent,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def split(ok_ids: list[str], fraction: float) -> dict[str, list[str]]:
    """Held-out environments for evaluation: a stable, hash-ordered share."""
    order = sorted(ok_ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    n = round(len(order) * fraction)
    if fraction > 0 and len(order) >= 2:
        n = max(1, n)
    held = set(order[:n])
    return {"train": sorted(i for i in ok_ids if i not in held), "heldout": sorted(held)}


def remove_orphans(client: Any) -> int:
    """Containers left by envprep runs that died (SIGKILL) on this host."""
    n = 0
    host = socket.gethostname()
    for c in client.containers.list(all=True, filters={"label": [f"{LABEL}.pid"]}):
        lab = c.labels
        if lab.get(f"{LABEL}.host", host) != host:
            continue
        pid = int(lab.get(f"{LABEL}.pid", "0"))
        # At stage start this process has no containers yet, so its own pid counts as dead.
        alive = pid > 0 and pid != os.getpid() and Path(f"/proc/{pid}").exists()
        if not alive:
            with contextlib.suppress(Exception):
                c.remove(force=True)
                n += 1
    return n


async def _run_all(ep: Envprep, tasks: list[dict[str, Any]], bar: Any) -> list[TaskOutcome]:
    sem = asyncio.Semaphore(ep.cfg.envprep.concurrency)

    async def one(task: dict[str, Any]) -> TaskOutcome:
        fp = fingerprint(ep.cfg, task)
        done = ep.work / fp / "outcome.json"
        if done.exists():  # finished before (this run was resumed)
            bar.advance()
            rec = json.loads(done.read_text())
            rec["timings"] = Timings(**rec["timings"])
            rec["resumed"] = True
            return TaskOutcome(**{k: v for k, v in rec.items() if k != "resumed"})
        async with sem:
            outcome = await ep.prepare(task, fp)
        bar.advance()
        log.info(
            "%s %s%s",
            task["id"],
            outcome.status,
            f" ({outcome.step}: {outcome.reason})" if outcome.reason else "",
        )
        return outcome

    async with ep.client:
        return list(await asyncio.gather(*(one(t) for t in tasks)))


def run(ctx: StageContext) -> dict[str, Any]:
    """data/envs/<task_id>/ (Harbor task dirs), failed.jsonl and splits.json from accepted tasks."""
    cfg = ctx.cfg
    track = StageRun("envprep", cfg, ctx.paths.workdir)
    docker = docker_client()
    tasks = read_jsonl(ctx.paths.accepted)
    removed = remove_orphans(docker)
    if removed:
        log.info("removed %d container(s) left by an interrupted run", removed)
    base_image.ensure(cfg.envprep.base_image)
    work = ctx.root / ".litecoder" / "envprep"
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob(".tmp-*"):  # half-done tasks of a killed run
        shutil.rmtree(stale, ignore_errors=True)
    run_id = f"envprep-{uuid.uuid4().hex[:8]}"
    ep = Envprep(ctx, ctx.client("agent"), docker, run_id, work)

    with cleanup_on_signals(), progress("envprep", len(tasks)) as bar:
        outcomes = asyncio.run(_run_all(ep, tasks, bar))

    envs = ctx.paths.envs
    if envs.exists():
        shutil.rmtree(envs)
    envs.mkdir(parents=True)
    for task, out in zip(tasks, outcomes, strict=True):
        if out.status == "ok":
            shutil.copytree(
                work / fingerprint(cfg, task) / "env", envs / out.task_id, symlinks=True
            )
    failed = [o.record() for o in outcomes if o.status != "ok"]
    write_jsonl(envs / "failed.jsonl", failed)
    ok_ids = [o.task_id for o in outcomes if o.status == "ok"]
    splits = split(ok_ids, cfg.envprep.heldout_fraction)
    write_json(envs / "splits.json", splits)
    remove_labelled(docker, run=run_id, keep_task_images=cfg.envprep.keep_images)

    check_names = [
        "copy_sources",
        "build",
        "task_toml",
        "start_state_fails",
        "solution_passes",
        "harbor_oracle",
    ]
    pass_rates = {}
    for name in check_names:
        vals = [o.checks[name] for o in outcomes if name in o.checks]
        ok = [v is True or v == 1.0 for v in vals]
        pass_rates[name] = {
            "run": len(vals),
            "passed": sum(ok),
            "rate": round(sum(ok) / len(vals), 4) if vals else None,
        }
    per_domain: dict[str, dict[str, int]] = {}
    for o in outcomes:
        d = per_domain.setdefault(o.domain, {"tasks": 0, "environments": 0})
        d["tasks"] += 1
        d["environments"] += int(o.status == "ok")
    n = max(1, len(outcomes))
    timing_keys = ["llm_s", "build_s", "commands_s", "validation_s", "total_s"]
    track.metrics.update(
        {
            "tasks": len(outcomes),
            "environments": len(ok_ids),
            "failed": len(failed),
            "failed_by_step": {
                s: sum(1 for f in failed if f["step"] == s)
                for s in sorted({f["step"] for f in failed})
            },
            "train": len(splits["train"]),
            "heldout": len(splits["heldout"]),
            "checks": pass_rates,
            "per_domain": per_domain,
            "mean_task_timings_s": {
                k: round(sum(getattr(o.timings, k) for o in outcomes) / n, 3) for k in timing_keys
            },
            "per_task": {
                o.task_id: {
                    "status": o.status,
                    **{k: round(getattr(o.timings, k), 3) for k in timing_keys},
                }
                for o in outcomes
            },
            "llm": ctx.usage.to_dict(),
        }
    )
    track.table = [
        {
            "task_id": o.task_id,
            "domain": o.domain,
            "status": o.status,
            "step": o.step or "",
            "reason": (o.reason or "")[:300],
        }
        for o in outcomes
    ]
    return track.finish()


def clean(keep_task_images: bool = True) -> dict[str, int]:
    """`litecoder clean`: remove every litecoder-labelled container (and image, by policy)."""
    return remove_labelled(docker_client(), keep_task_images=keep_task_images)

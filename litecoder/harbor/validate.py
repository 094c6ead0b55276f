"""`litecoder validate`: litecoder's task checks on any Harbor task dirs, its own or external.

Static checks (cheap, in parallel; hundreds of dirs in seconds): layout, task.toml against
Harbor's schema, everything that could reach the host when the task runs (`taskdir.reach`:
compose file, task.toml values naming host variables, COPY/ADD sources outside the context
or fetched from a URL, links that leave the task dir), the test script and the reward it must
write, the files the tests name, network needs (downloads when the image builds or when the
tests run, `allow_internet`, public network mode) and image references (private registries).
Expensive checks on demand: `--build` (the image builds, with litecoder's confined builder;
setuid/setgid files, device nodes and file capabilities it adds to its base are reported),
`--start-state` (the verifier fails on the untouched starting state) and `--oracle` (a real
Harbor trial of the oracle agent gives 1.0, through litecoder's trial environment).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from litecoder.harbor.taskdir import check_task_toml, dockerfile_instructions, reach

if TYPE_CHECKING:
    from litecoder.harbor.runner import TrialPolicy

PUBLIC_REGISTRIES = ("docker.io", "registry-1.docker.io", "ghcr.io", "quay.io", "public.ecr.aws",
                     "mcr.microsoft.com", "gcr.io", "registry.k8s.io", "nvcr.io")  # fmt: skip
# Commands that fetch from the internet.
DOWNLOADS = re.compile(
    r"\b(curl|wget)\b[^|;&\n]*https?://|\bpip3?\s+install\b|\buv\s+(pip|add|sync|run|tool)\b"
    r"|\buvx\b|\bapt(-get)?\s+(install|update)\b|\bgit\s+clone\b|\bnpm\s+(install|ci)\b"
    r"|\bcargo\s+install\b|\bgo\s+(get|install)\b|astral\.sh/uv|\bapk\s+add\b"
)
REWARD = re.compile(r"/logs/verifier/reward\.(txt|json)")


@dataclass
class Finding:
    check: str
    problem: str
    severity: str = "error"  # error | warning


@dataclass
class TaskReport:
    path: Path
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def add(self, check: str, problems: Iterable[str], severity: str = "error") -> None:
        self.findings += [Finding(check, p, severity) for p in problems]

    def to_dict(self) -> dict[str, object]:
        return {
            "task": self.path.name,
            "path": str(self.path),
            "ok": self.ok,
            "findings": [f.__dict__ for f in self.findings],
        }


def task_dirs(paths: Iterable[Path]) -> list[Path]:
    """Task dirs (those with a task.toml) given or below the given paths (two levels)."""
    out: list[Path] = []
    for p in paths:
        if (p / "task.toml").is_file():
            out.append(p)
            continue
        for child in sorted(p.iterdir()) if p.is_dir() else []:
            if (child / "task.toml").is_file():
                out.append(child)
            elif child.is_dir():
                out += sorted(g for g in child.iterdir() if (g / "task.toml").is_file())
    return out


def _image_problems(image: str) -> list[str]:
    host = image.split("/")[0] if "/" in image else ""
    private = ("." in host or ":" in host or host == "localhost") and host not in PUBLIC_REGISTRIES
    return [f"image {image!r} is in a private registry ({host})"] if private else []


def static(task: Path, *, allow_network: bool = False) -> TaskReport:
    """The cheap checks of one task dir; never raises for what the dir holds."""
    r = TaskReport(task)
    try:
        _static(r, task, allow_network)
    except (OSError, UnicodeError, ValueError) as e:  # a dir too broken to read at all
        r.add("layout", [f"cannot be read: {e}"])
    return r


def _static(r: TaskReport, task: Path, allow_network: bool) -> None:
    for rel in ("instruction.md", "task.toml", "tests/test.sh"):
        if not (task / rel).is_file():
            r.add("layout", [f"missing {rel}"])
    if not (task / "solution/solve.sh").is_file():
        r.add("layout", ["no solution/solve.sh (the oracle check cannot run)"], "warning")
    raw: dict[str, object] = {}
    if (task / "task.toml").is_file():
        r.add("task_toml", check_task_toml(task / "task.toml"))
        try:
            raw = tomllib.loads((task / "task.toml").read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            raw = {}
    env = raw.get("environment") if isinstance(raw.get("environment"), dict) else {}
    assert isinstance(env, dict)
    docker_image = env.get("docker_image")
    dockerfile = task / "environment/Dockerfile"
    if dockerfile.is_file():
        data = dockerfile.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            r.add("dockerfile", [f"not UTF-8 text ({e.reason} at byte {e.start})"])
        instructions = dockerfile_instructions(data.decode("utf-8", errors="replace"))
        if not any(instr == "FROM" for instr, _ in instructions):
            r.add("dockerfile", ["no FROM instruction"])
        for instr, args in instructions:
            if instr == "FROM" and not args.split():
                r.add("dockerfile", ["FROM names no image"])
            if instr == "FROM" and args.split():
                r.add("image", _image_problems(args.split()[0]))
            if instr in ("RUN", "ADD") and DOWNLOADS.search(args) and not allow_network:
                r.add("network", [f"downloads while the image builds: {instr} {args[:80]}"])
    elif not docker_image:
        r.add("layout", ["no environment/Dockerfile and no environment.docker_image"])
    if isinstance(docker_image, str):
        r.add(
            "image", _image_problems(docker_image), "warning" if dockerfile.is_file() else "error"
        )
    for check, problem in reach(task):  # what could reach the host when it runs
        r.add(check, [problem])
    if not allow_network and (
        raw.get("allow_internet") is True or env.get("allow_internet") is True
    ):
        r.add("network", ["allow_internet = true: the task needs the internet"])
    test_sh = task / "tests/test.sh"
    if test_sh.is_file():
        text = test_sh.read_text(errors="replace")
        tests_text = "\n".join(
            p.read_text(errors="replace")
            for p in (task / "tests").rglob("*")
            if p.is_file() and not p.is_symlink() and p.suffix in (".sh", ".py", "")
        )
        if not REWARD.search(tests_text):
            r.add("reward", ["the tests never write /logs/verifier/reward.txt (or .json)"])
        for ref in sorted(set(re.findall(r"/tests/([\w./-]+)", text))):
            if not (task / "tests" / ref).exists():
                r.add("test_files", [f"tests/test.sh uses /tests/{ref}, which tests/ lacks"])
        if DOWNLOADS.search(text) and not allow_network:
            r.add(
                "network", ["the tests download at test time (pip/uv/curl/apt: needs the internet)"]
            )


def expensive(
    tasks: list[TaskReport],
    work: Path,
    *,
    policy: TrialPolicy,
    build: bool,
    start_state: bool,
    oracle: bool,
    verifier_checks: bool = False,
) -> None:
    """The checks that build and run containers (tasks that failed statically are skipped):
    each image built by litecoder's builder (and its privileged entries reported), the
    verifier on the untouched start state, and one Harbor job of the oracle agent over all
    of them, through litecoder's trial environment."""

    from litecoder.harbor import runner, verifier
    from litecoder.sandbox import (
        BuildError,
        ContainerLimits,
        Sandbox,
        SandboxError,
        docker_client,
        labels,
    )
    from litecoder.sandbox.build import privileged_entries

    client = docker_client()
    staged: dict[str, tuple[TaskReport, Path]] = {}
    for r in tasks:
        if not r.ok:
            continue
        try:
            out = runner.stage(
                [r.path], work / "staged", run="validate", policy=policy, client=client
            )[0]
        except runner.TaskRejected as e:
            r.add("compose", e.reasons)
            continue
        except BuildError as e:
            last = e.log_tail.strip().splitlines()[-1] if e.log_tail.strip() else ""
            r.add("build", [f"{e} [{last}]"])
            continue
        except SandboxError as e:
            r.add("build", [str(e)])
            continue
        staged[out.name] = (r, out)
        image = tomllib.loads((out / "task.toml").read_text())["environment"]["docker_image"]
        if build:
            base = _final_base(r.path / "environment/Dockerfile")
            r.add("image", [f"the image adds {e}" for e in privileged_entries(client, image, base)],
                  "warning")  # fmt: skip
        if start_state:
            try:
                with Sandbox(image, ContainerLimits(memory_mb=1024, command_timeout_s=600),
                             labels("validate", r.path.name, "check")) as sb:  # fmt: skip
                    sb.put_dir(out / "tests", "/tests")
                    sb.exec("bash /tests/test.sh")
                    raw = sb.read_file("/logs/verifier/reward.txt", 4096)
                reward = (raw or b"").decode(errors="replace").strip()
                if reward not in ("0", "0.0"):
                    r.add(
                        "start_state",
                        [f"the verifier gives {reward or 'no reward'} on the start state"],
                    )
            except SandboxError as e:
                r.add("start_state", [str(e)])
        if verifier_checks and (out / "solution/solve.sh").is_file():
            task = tomllib.loads((out / "task.toml").read_text())

            def make(image: str = image, name: str = r.path.name) -> Sandbox:
                return Sandbox(image, ContainerLimits(memory_mb=1024, command_timeout_s=600),
                               labels("validate", name, "check"))  # fmt: skip

            try:
                s = verifier.strength(
                    make, out,
                    solve_timeout_s=float(task.get("agent", {}).get("timeout_sec", 600)),
                    verify_timeout_s=float(task.get("verifier", {}).get("timeout_sec", 600)),
                    workdir=str(task.get("environment", {}).get("workdir") or "/"),
                )  # fmt: skip
            except SandboxError as e:
                r.add("verifier", [str(e)])
            else:
                r.add("verifier", [f"weak verifier ({c}): {s.notes.rstrip('; ')}"
                                   for c in s.failed()])  # fmt: skip
    if not (oracle and staged):
        return
    # The job runner every stage uses: staged again (the images are built by now), resumed
    # when `--work` holds a finished job, every container reaped at the end.
    job_dir, _, _ = runner.run_job(
        name="oracle",
        jobs_dir=work / "jobs",
        work=work,
        tasks=[r.path for r, _ in staged.values()],
        agents=[{"name": "oracle"}],
        n_attempts=1,
        n_concurrent=4,
        env=runner.harbor_env(),
        policy=policy,
        environment=runner.environment_config(),
        build_timeout_s=1800,
        harbor_timeout_s=3600,
        partial_ok=True,  # a task without a result is reported below, by name
        client=client,
    )
    results = {res.task_name: res for res in runner.trial_results(job_dir)}
    for name, (r, _) in staged.items():
        res = results.get(name)
        got = runner.reward(res) if res is not None else None
        if got != 1.0:
            exc = runner.exception_type(res) if res is not None else "no trial result"
            r.add("oracle", [f"the oracle gets reward {got}" + (f" ({exc})" if exc else "")])


def _final_base(dockerfile: Path) -> str | None:
    """The image the Dockerfile's last stage starts from (None: none, or scratch)."""
    try:
        froms = [a.split()[0] for i, a in dockerfile_instructions(dockerfile.read_text(
            errors="replace")) if i == "FROM" and a.split()]  # fmt: skip
    except OSError:
        return None
    return froms[-1] if froms and froms[-1] != "scratch" else None

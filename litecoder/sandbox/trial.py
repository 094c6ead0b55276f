"""A Harbor trial's containers, started, run and emptied by litecoder.

Harbor runs every trial of litecoder's through litecoder's own environment
(`litecoder.harbor.environment`), which hands each container operation to `TrialContainers`:

- **Containers by construction.** What runs is a `TrialSpec` that litecoder wrote when it
  staged the task: the task's services as litecoder parsed and checked them (images it built,
  literal commands and environment, healthchecks), each with the same hardening: capabilities
  dropped to a small set, no-new-privileges, docker-init as PID 1, pids, memory without swap,
  CPUs, a hard disk quota, a capped engine log, no host path, no host namespace. Nothing is
  interpolated: no compose file, no `${VAR}`, no `.env`.
- **Networks that reach nothing.** A trial without network access runs in `network_mode:
  none`, or, with sidecars, on a network of its own that is internal *and* has no address on
  the host (`inhibit_ipv4`): an internal bridge alone still lets containers reach every host
  service listening on the bridge's gateway address.
- **Bounded commands.** A command's output is kept as a head and a tail (`output_bytes`); a
  host-side deadline backs the in-container `timeout`.
- **Copy-out through the untrusted-archive path** (`untrusted.copy_out`): regular files and
  directories only, every file, every copy and the number of entries capped, nothing read
  through a link on the host.
- **A clean process space for the verifier.** `restart_main` kills every process of the main
  container (the file system stays) before the verifier starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shlex
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from litecoder.sandbox.container import BoundedOutput, exec_output, hardened
from litecoder.sandbox.engine import LABEL, PROJECT_LABEL, SandboxError, docker_client, one_line
from litecoder.sandbox.untrusted import CopyCaps, CopyOut, Refusal, copy_out

MAIN = "main"
SPEC_NAME = "litecoder-trial.json"  # in a staged task's environment/ (nothing else is there)
# Which run and project a trial's containers belong to (their labels, by which litecoder reaps
# and watches them) comes from the Harbor process's environment, set by litecoder's job runner,
# not from the staged spec: a staged task dir is then the same wherever its project is, and a
# moved or copied project's Harbor job resumes (Harbor's lock holds each task dir's digest).
RUN_ENV = "LITECODER_TRIAL_RUN"
PROJECT_ENV = "LITECODER_TRIAL_PROJECT"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Healthcheck(_Model):
    test: list[str]  # Docker's form: ["CMD", ...] or ["CMD-SHELL", "..."]
    interval_s: float = 5.0
    timeout_s: float = 5.0
    retries: int = 3
    start_period_s: float = 0.0

    def docker(self) -> dict[str, Any]:
        ns = 1_000_000_000
        return {
            "test": self.test,
            "interval": int(self.interval_s * ns),
            "timeout": int(self.timeout_s * ns),
            "retries": self.retries,
            "start_period": int(self.start_period_s * ns),
        }


class Service(_Model):
    image: str
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None
    healthcheck: Healthcheck | None = None
    depends_on: list[str] = Field(default_factory=list)
    memory_mb: int
    cpus: float
    storage_size: str | None = None  # the engine's `storage_opt size`; None: no quota


class TrialSpec(_Model):
    """Everything a trial's containers are: written by litecoder at staging, read at start."""

    services: dict[str, Service]
    capabilities: list[str]
    pids: int
    network: bool = False  # may the containers reach the network?
    labels: dict[str, str] = Field(default_factory=dict)
    log_max_mb: int = 10
    output_bytes: int = 4 * 2**20  # of one command's output: its head and tail
    copy_max_file_bytes: int = 64 * 2**20
    copy_max_total_bytes: int = 256 * 2**20
    copy_max_files: int = 10_000
    reward_max_bytes: int = 64 * 2**10
    clean_before_verifier: bool = True
    start_timeout_s: float = 300.0

    @property
    def copy_caps(self) -> CopyCaps:
        return CopyCaps(self.copy_max_file_bytes, self.copy_max_total_bytes, self.copy_max_files)

    def write(self, env_dir: Path) -> None:
        (env_dir / SPEC_NAME).write_text(self.model_dump_json(indent=2))

    def for_run(self, environ: dict[str, str] | os._Environ[str]) -> TrialSpec:
        """This spec with the run's labels from `environ` (see RUN_ENV); none there is an
        error: a trial no run owns could not be found to be removed."""
        run, project = environ.get(RUN_ENV), environ.get(PROJECT_ENV)
        if not run or not project:
            raise SandboxError(
                f"{RUN_ENV}/{PROJECT_ENV} unset: litecoder's trial environment runs under "
                "litecoder's job runner only"
            )
        return self.model_copy(
            update={"labels": {**self.labels, f"{LABEL}.run": run, PROJECT_LABEL: project}}
        )

    @classmethod
    def read(cls, env_dir: Path) -> TrialSpec:
        path = env_dir / SPEC_NAME
        if not path.is_file():
            raise SandboxError(
                f"{env_dir}: no {SPEC_NAME}: litecoder's trial environment runs only task "
                "dirs that litecoder staged"
            )
        return cls.model_validate_json(path.read_text())


def trial_key(session: str) -> str:
    """A trial's name as its containers' `litecoder.trial` label has it."""
    return "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in session.lower())[:80]


def start_order(services: dict[str, Service]) -> list[str]:
    """Sidecars before the services that depend on them, the main container last."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise SandboxError(f"services depend on each other in a cycle ({name})")
        visiting.add(name)
        for dep in services[name].depends_on:
            if dep not in services:
                raise SandboxError(f"service {name} depends on unknown service {dep}")
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in sorted(n for n in services if n != MAIN):
        visit(name)
    visit(MAIN)
    return order


@dataclass
class Exec:
    code: int
    output: str
    truncated: bool
    output_bytes: int
    timed_out: bool


@dataclass
class TrialContainers:
    """The containers of one trial (see the module docstring). Not thread-safe per call
    kind: Harbor's environment calls one operation at a time per trial, except `exec`."""

    spec: TrialSpec
    name: str  # the trial's environment session (unique per trial)
    client: Any = None
    containers: dict[str, Any] = field(default_factory=dict)
    network: Any = None
    refused: list[Refusal] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Host pids of docker-init and the container's own command: every other one is a leftover.
    _baseline: set[str] = field(default_factory=set)

    # -- lifecycle --

    def _labels(self, service: str) -> dict[str, str]:
        return {**self.spec.labels, "litecoder.trial": self.name, "litecoder.service": service}

    def start(self) -> None:
        self.client = self.client or docker_client()
        spec = self.spec
        multi = len(spec.services) > 1
        net_name = None
        if multi or spec.network:
            digest = hashlib.sha256(self.name.encode()).hexdigest()[:10]
            net_name = f"litecoder-{self.name[:40]}-{digest}"
            options = {} if spec.network else {"com.docker.network.bridge.inhibit_ipv4": "true"}
            self.network = self.client.networks.create(
                net_name,
                driver="bridge",
                internal=not spec.network,
                options=options,
                labels=self._labels("network"),
                check_duplicate=True,
            )
        for name in start_order(spec.services):
            self._start_service(name, spec.services[name], net_name)
        self._baseline = self._pids()

    def _pids(self) -> set[str]:
        """Host pids of the main container's processes."""
        try:
            return {str(p[1]) for p in self.main.top().get("Processes") or []}
        except Exception:
            return set()

    def _start_service(self, name: str, svc: Service, net: str | None) -> None:
        spec = self.spec
        kwargs: dict[str, Any] = hardened(
            capabilities=spec.capabilities,
            pids=spec.pids,
            memory_mb=svc.memory_mb,
            cpus=svc.cpus,
            log_max_mb=spec.log_max_mb,
            storage_size=svc.storage_size,
        )
        if net is None:
            kwargs["network_mode"] = "none"
        else:
            kwargs["network"] = net
            kwargs["networking_config"] = {
                net: self.client.api.create_endpoint_config(aliases=[name])
            }
        command = svc.command if name != MAIN else ["sh", "-c", "sleep infinity"]
        try:
            c = self.client.containers.run(
                svc.image,
                command,
                entrypoint=svc.entrypoint,
                environment=svc.environment,
                working_dir=svc.working_dir,
                user=svc.user or "",
                healthcheck=svc.healthcheck.docker() if svc.healthcheck else None,
                hostname=name,
                labels=self._labels(name),
                detach=True,
                **kwargs,
            )
        except Exception as e:
            raise SandboxError(
                f"cannot start service {name} ({svc.image}): {one_line(e)}"
            ) from None
        self.containers[name] = c
        if svc.healthcheck is not None:
            self._wait_healthy(name, c, svc.healthcheck)

    def _wait_healthy(self, name: str, c: Any, hc: Healthcheck) -> None:
        budget = hc.start_period_s + (hc.interval_s + hc.timeout_s) * (hc.retries + 1) + 30
        deadline = time.monotonic() + min(self.spec.start_timeout_s, budget)
        while time.monotonic() < deadline:
            c.reload()
            state = c.attrs.get("State") or {}
            if state.get("Status") != "running":
                raise SandboxError(f"service {name} stopped ({state.get('Status')})")
            status = (state.get("Health") or {}).get("Status")
            if status == "healthy":
                return
            if status == "unhealthy":
                raise SandboxError(f"service {name} is unhealthy")
            time.sleep(0.5)
        raise SandboxError(f"service {name} was not healthy in time")

    @property
    def main(self) -> Any:
        try:
            return self.containers[MAIN]
        except KeyError:
            raise SandboxError("the trial's main container is not running") from None

    def stop(self) -> None:
        """Remove every container and the network; what their engine logs held is noted."""
        for name, c in list(self.containers.items()):
            with contextlib.suppress(Exception):
                c.reload()
                log_path = c.attrs.get("LogPath") or ""
                if log_path and os.path.isfile(log_path):  # a local engine: its file's size
                    self.notes.setdefault("log_bytes", {})[name] = os.path.getsize(log_path)
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
        self.containers.clear()
        if self.network is not None:
            with contextlib.suppress(Exception):
                self.network.remove()
            self.network = None

    # -- processes --

    def restart_main(self) -> int:
        """Kill every process of the main container (its file system stays): what the agent
        or a solution left running cannot touch the verifier's run. Returns how many there
        were besides docker-init and the container's own command (`_baseline`)."""
        c = self.main
        left = len(self._pids() - self._baseline)
        # SIGKILL to pid 1 ends the whole pid namespace (a fork bomb included); kill, wait and
        # start are separate calls so that a slow engine under load is retried, not fatal.
        last: Exception | None = None
        for _ in range(3):
            try:
                c.reload()
                if c.status == "running":
                    c.kill()
                c.wait(timeout=120, condition="not-running")
                c.start()
            except Exception as e:
                last = e
                time.sleep(1)
                continue
            break
        else:
            assert last is not None
            raise SandboxError(f"could not restart the trial container: {one_line(last)}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            c.reload()
            if c.status == "running":
                break
            time.sleep(0.2)
        else:
            raise SandboxError("the trial container did not come back after its restart")
        self._baseline = self._pids()
        self.notes["processes_killed_before_verifier"] = (
            self.notes.get("processes_killed_before_verifier", 0) + left
        )
        return left

    def exec(
        self,
        command: str,
        *,
        user: str | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_s: float | None = None,
        shell: tuple[str, ...] = ("bash", "-c"),
        service: str = MAIN,
    ) -> Exec:
        """Run `shell command` to its end; output bounded, a deadline on both sides."""
        c = self.containers.get(service) or self.main
        argv = [*shell, command]
        if timeout_s:
            # coreutils' timeout kills the command's whole process group; images without it
            # are ended by the host-side deadline (and the verifier's restart).
            secs = str(max(1, int(timeout_s)))
            argv = [
                "sh", "-c",
                'if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 "$0" "$@"; '
                'else exec "$@"; fi',
                secs, *argv,
            ]  # fmt: skip
        out = BoundedOutput(self.spec.output_bytes)
        api = self.client.api
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                ex = api.exec_create(
                    c.id, argv, user=user or "", workdir=cwd, environment=env or None
                )
                for chunk in exec_output(api, ex["Id"]):
                    out.feed(chunk)
                result["code"] = api.exec_inspect(ex["Id"])["ExitCode"]
            except Exception as e:
                result["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(timeout_s + 30 if timeout_s else None)
        if t.is_alive():
            text, truncated = out.text()
            return Exec(124, text, truncated, out.total, timed_out=True)
        if "error" in result:
            raise SandboxError(f"exec failed: {one_line(result['error'])}")
        text, truncated = out.text()
        code = result.get("code")
        code = 137 if code is None else int(code)
        timed_out = bool(timeout_s) and code in (124, 137)
        if truncated:
            self.notes["outputs_truncated"] = self.notes.get("outputs_truncated", 0) + 1
        return Exec(code, text, truncated, out.total, timed_out)

    # -- files in --

    def put(self, dest: str, add: Callable[[tarfile.TarFile], None]) -> None:
        """Write what `add` puts into a tar archive under `dest` (created first), as root."""
        self.exec(f"mkdir -p {shlex.quote(dest)}", user="root")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            add(tar)
        if not self.main.put_archive(dest, buf.getvalue()):
            raise SandboxError(f"could not copy files to {dest}")

    def put_path(self, src: Path, dest_dir: str, arcname: str | None = None) -> None:
        """A host file, or a host directory's contents, into `dest_dir` (links stay links,
        owners root)."""

        def root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            return info

        def add(tar: tarfile.TarFile) -> None:
            if src.is_dir():
                for child in sorted(src.iterdir()):
                    tar.add(child, arcname=child.name, filter=root_owned)
            else:
                tar.add(src, arcname=arcname or src.name, filter=root_owned)

        self.put(dest_dir, add)

    # -- files out --

    def _archive(self, path: str) -> Iterable[bytes]:
        from docker.errors import NotFound

        try:
            stream: Iterable[bytes] = self.main.get_archive(path)[0]
        except NotFound:
            raise FileNotFoundError(f"{path} does not exist in the trial container") from None
        return stream

    def copy_dir(
        self,
        path: str,
        dest: Path,
        *,
        select: Callable[[str], bool] = lambda _: True,
        file_cap: Callable[[str], int] | None = None,
    ) -> CopyOut:
        """A directory of the main container under `dest` (see `untrusted.copy_out`)."""
        res = copy_out(
            self._archive(path), dest, caps=self.spec.copy_caps, select=select, file_cap=file_cap
        )
        self._note_copy(path, res)
        return res

    def copy_file(self, path: str, dest: Path, max_bytes: int | None = None) -> None:
        """One regular file of the main container to `dest` on the host (capped)."""
        name = PurePosixPath(path).name
        tmp = dest.parent / f".{dest.name}.litecoder-copy"
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        elif tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        cap = max_bytes or self.spec.copy_max_file_bytes
        try:
            res = copy_out(
                self._archive(path),
                tmp,
                caps=self.spec.copy_caps,
                strip=0,
                select=lambda rel: rel == name,
                file_cap=lambda _: cap,
            )
            self._note_copy(path, res)
            got = tmp / name
            if not got.is_file() or got.is_symlink():
                why = res.refused[0].reason if res.refused else res.stopped or "not a file"
                raise FileNotFoundError(f"{path}: not copied ({why})")
            if dest.is_symlink() or dest.is_file():
                dest.unlink()
            os.replace(got, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _note_copy(self, path: str, res: CopyOut) -> None:
        with self._lock:
            self.refused += [Refusal(f"{path}/{r.path}".replace("//", "/"), r.reason)
                             for r in res.refused]  # fmt: skip
            if res.stopped:
                self.refused.append(Refusal(path, f"copy stopped: {res.stopped}"))
            self.notes["copied_bytes"] = self.notes.get("copied_bytes", 0) + res.bytes

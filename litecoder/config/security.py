"""What containers may do (litecoder.sandbox): capabilities, limits, copy-out caps."""

from __future__ import annotations

from pydantic import Field, model_validator

from litecoder.config.base import Strict

# Docker's default capabilities without MKNOD and SETFCAP: the most a container may be given.
ALLOWED_CAPS = (
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE",
    "NET_RAW", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
)  # fmt: skip


class BuildSecurity(Strict):
    network: bool = False  # may RUN steps reach the network?
    memory_mb: int = Field(default=4096, ge=64)  # per RUN step, no swap
    cpu_shares: int = Field(default=512, ge=2)  # relative weight (a container's default: 1024)


class CopyOutLimits(Strict):
    """What one copy out of a trial container may bring to the host (logs, rewards,
    artifacts): regular files and directories only, within these bounds."""

    max_file_mb: int = Field(default=64, ge=1)
    max_total_mb: int = Field(default=256, ge=1)
    max_files: int = Field(default=10_000, ge=1)
    reward_max_kb: int = Field(default=64, ge=1)  # reward.txt / reward.json


class Security(Strict):
    """What every container litecoder starts may do: envprep sandboxes, image builds and
    Harbor trials (README, Security)."""

    capabilities: list[str] = Field(
        default_factory=lambda: [
            "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
            "NET_BIND_SERVICE",
        ]
    )  # fmt: skip
    # A hard disk quota on every container (needs an engine that enforces one; see README).
    disk_quota: bool = True
    trial_pids: int = Field(default=512, ge=32)
    # Memory of a trial whose task.toml names none (else the task's), always without swap.
    trial_memory_mb: int = Field(default=2048, ge=64)
    # A task's sidecar services (its compose file): memory (no swap) and writable disk each.
    sidecar_memory_mb: int = Field(default=1024, ge=64)
    sidecar_disk_mb: int = Field(default=1024, ge=64)
    # One trial command's output kept (its head and tail), and the engine's log of a container.
    trial_output_kb: int = Field(default=4096, ge=16)
    log_max_mb: int = Field(default=10, ge=1)
    # Kill every process of a trial's container before its verifier runs (README, Security).
    clean_before_verifier: bool = True
    copy_out: CopyOutLimits = CopyOutLimits()
    build: BuildSecurity = BuildSecurity()

    @model_validator(mode="after")
    def _caps(self) -> Security:
        bad = [c for c in self.capabilities if c not in ALLOWED_CAPS]
        if bad:
            raise ValueError(
                f"capabilities: {bad} may not be given to a container (allowed: {ALLOWED_CAPS})"
            )
        return self

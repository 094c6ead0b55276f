"""Environment preparation (litecoder.envprep): the base image, the agent, the sandbox, the
steps and the task.toml it writes."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from litecoder.config.base import Strict


class BaseImage(Strict):
    name: str
    build: Literal["debootstrap", "pull"]
    suite: str | None = None
    mirror: str | None = None
    packages: list[str] = Field(default_factory=list)
    # Dockerfile lines every task image carries after FROM (tools the base image lacks).
    dockerfile_prelude: list[str] = Field(default_factory=list)


class AgentSettings(Strict):
    max_turns: int = Field(default=12, gt=0)
    max_total_tokens: int = Field(default=200_000, gt=0)
    observation_chars: int = Field(default=4000, gt=100)
    temperature: float = Field(default=0.2, ge=0)
    max_tokens: int = Field(default=4096, gt=0)
    max_reasks: int = Field(default=2, ge=0)


class SandboxSettings(Strict):
    cpus: float = Field(default=1.0, gt=0)
    memory_mb: int = Field(default=1024, ge=64)
    pids: int = Field(default=256, ge=16)
    # Writable disk space of a sandbox (a hard quota on top of its image; security.disk_quota).
    disk_mb: int = Field(default=2048, ge=64)
    network: bool = False
    command_timeout_s: float = Field(default=60, gt=0)
    task_timeout_s: float = Field(default=900, gt=0)


class Capture(Strict):
    exclude: list[str] = Field(default_factory=list)
    exclude_names: list[str] = Field(default_factory=list)
    max_bytes: int = Field(default=50_000_000, gt=0)
    max_files: int = Field(default=20_000, gt=0)


class TaskToml(Strict):
    agent_timeout_sec: float = Field(default=900, gt=0)
    verifier_timeout_sec: float = Field(default=300, gt=0)
    build_timeout_sec: float = Field(default=600, gt=0)
    cpus: float = Field(default=1, gt=0)
    memory_mb: int = Field(default=2048, gt=0)
    storage_mb: int = Field(default=10240, gt=0)
    # isolated: the task's own compose file sets `network_mode: none` (Docker enforces it,
    # works offline); no-network: Harbor's network policy (its egress sidecar image must be
    # pullable); public: internet allowed.
    network: Literal["isolated", "no-network", "public"] = "isolated"
    workdir: str = "/app"


VerifierCheck = Literal[
    "deterministic", "rejects_reward_write", "rejects_test_edit", "rejects_near_miss"
]


class Validate(Strict):
    harbor_oracle: bool = True
    harbor_timeout_s: float = Field(default=900, gt=0)
    verifier_strength: bool = True
    require: list[VerifierCheck] = Field(default_factory=lambda: list(get_args(VerifierCheck)))


class StepPrompt(Strict):
    system: str
    user: str


class EnvprepPrompts(Strict):
    actions: str
    refine: StepPrompt
    setup_container: StepPrompt
    setup_dockerfile: StepPrompt
    solution: StepPrompt
    verifier: StepPrompt
    near_miss: StepPrompt


Step = Literal["refine", "setup", "solution", "verifier", "near_miss", "config"]
ENVPREP_STEPS: tuple[Step, ...] = (
    "refine", "setup", "solution", "verifier", "near_miss", "config"
)  # fmt: skip


class Envprep(Strict):
    base_image: BaseImage
    mode: Literal["container", "dockerfile"] = "container"
    steps: list[Step] = Field(default_factory=lambda: list(ENVPREP_STEPS))
    concurrency: int = Field(default=2, gt=0)
    heldout_fraction: float = Field(default=0.2, ge=0, lt=1)
    keep_images: bool = True
    agent: AgentSettings = AgentSettings()
    sandbox: SandboxSettings = SandboxSettings()
    capture: Capture = Capture()
    task: TaskToml = TaskToml()
    validate_: Validate = Field(default=Validate(), alias="validate")
    test_sh: str
    prompts: EnvprepPrompts
    # "i/n": prepare only the i-th of n shares of the tasks (by task hash) into the shared work
    # area, for launchers running shards side by side; a run without a shard then assembles
    # data/envs from the finished work (README: envprep at scale).
    shard: str | None = Field(default=None, pattern=r"^\d+/\d+$")

    def shard_of(self) -> tuple[int, int] | None:
        if self.shard is None:
            return None
        i, n = (int(x) for x in self.shard.split("/"))
        return i, n

    @model_validator(mode="after")
    def _steps(self) -> Envprep:
        if (s := self.shard_of()) and not 0 <= s[0] < s[1]:
            raise ValueError(f"shard {self.shard!r}: needs 0 <= i < n")
        for required in ("setup", "solution", "verifier", "config"):
            if required not in self.steps:
                raise ValueError(
                    f"steps: {required!r} is required (only 'refine' and 'near_miss' are optional)"
                )
        return self

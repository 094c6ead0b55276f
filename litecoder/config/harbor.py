"""Harbor trials: rollout, evaluation, calibration, task sets from outside and the trial
environment (litecoder.harbor)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from litecoder.config.base import Strict
from litecoder.config.models import Price, RateLimits, Serve


class RolloutAgent(Strict):
    name: str  # a Harbor agent (`harbor run -a NAME`)
    label: str  # names the Harbor job and the scaffold in the dataset
    share: float = Field(gt=0)  # of the tasks; shares are normalised
    needs_network: bool = False  # installs itself from the internet inside the container
    # Another model than models.agent's, at the same endpoint (e.g. to mix teachers).
    model: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)  # `--ak` agent kwargs


class TerminalBenchSource(Strict):
    """A dataset of the original Terminal-Bench registry: the git commit it pins, the task ids
    it scores (its `task_id_subset`), converted to Harbor's layout by `harbor tasks migrate`."""

    registry_url: str = (
        "https://raw.githubusercontent.com/laude-institute/terminal-bench/main/registry.json"
    )
    name: str = "terminal-bench-core"
    version: str = "0.1.1"
    commit: str | None = None  # the pin; the registry's entry must name the same commit


class TaskSource(Strict):
    """Where Harbor task dirs come from: a Harbor registry dataset (`dataset`), an original
    Terminal-Bench registry entry (`terminal_bench`) or dirs on disk (`path`; Harbor layout,
    or the original layout, which is migrated). Shared by task sets and benchmarks."""

    source: str
    dataset: str | None = None  # registry: NAME@VERSION (e.g. terminal-bench@2.0)
    terminal_bench: TerminalBenchSource = TerminalBenchSource()
    path: str | None = None  # path: a directory of task dirs (either layout)

    @property
    def what(self) -> str:
        """How messages name these tasks."""
        raise NotImplementedError

    @property
    def path_override(self) -> str:
        """The config setting that points at a local copy instead."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _source_fields(self) -> TaskSource:
        if self.source == "registry" and not self.dataset:
            raise ValueError(f"{self.what}: source 'registry' needs dataset (NAME@VERSION)")
        if self.source == "path" and not self.path:
            raise ValueError(f"{self.what}: source 'path' needs path (a directory of task dirs)")
        return self


class TaskSet(TaskSource):
    """Harbor task dirs from outside this run (e.g. a released set of RL environments)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: Literal["registry", "terminal_bench", "path"] = "path"
    max_tasks: int | None = Field(default=None, ge=1)  # the first N (by name)

    @property
    def what(self) -> str:
        return f"task set {self.name}"

    @property
    def path_override(self) -> str:
        return "source: path, path: DIR"


class Rollout(Strict):
    split: Literal["train", "all"] = "train"
    n_attempts: int = Field(default=1, ge=1)
    n_concurrent: int = Field(default=2, ge=1)
    timeout_multiplier: float = Field(default=1.0, gt=0)
    agent_timeout_multiplier: float | None = Field(default=None, gt=0)
    # Whether the machine reaches the internet: agents with needs_network run only if so.
    network_available: bool = False
    # Registered with LiteLLM for endpoints it does not know (context length, output limit).
    model_info: dict[str, Any] = Field(default_factory=dict)
    harbor_timeout_s: float = Field(default=7200, gt=0)
    agents: list[RolloutAgent] = Field(min_length=1)
    # Task sets from outside (validated first: tasks with errors are left out and listed),
    # beside this run's environments, or instead of them with use_envs: false.
    external: list[TaskSet] = Field(default_factory=list)
    use_envs: bool = True
    # Trial exceptions that mean the teacher's endpoint failed (through the gateway, which had
    # already waited out what it could), not the agent: such trials are not results; a re-run
    # runs them again (and the stage fails when more than llm.max_failed_fraction of them).
    endpoint_error_types: list[str] = Field(
        default_factory=lambda: [
            "ServiceUnavailableError", "RateLimitError", "APIConnectionError",
            "InternalServerError", "Timeout", "APIError",
        ]
    )  # fmt: skip

    @model_validator(mode="after")
    def _agents(self) -> Rollout:
        labels = [a.label for a in self.agents]
        if len(set(labels)) != len(labels):
            raise ValueError(f"agents: labels must be unique, got {labels}")
        for a in self.agents:
            if a.needs_network and not self.network_available:
                raise ValueError(
                    f"agents: {a.label!r} ({a.name}) installs itself over the network, but "
                    "network_available is false"
                )
        return self


class EvalAgent(Strict):
    name: str = "terminus-2"
    label: str | None = None  # how results name this scaffold (default: the agent's name)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @property
    def tag(self) -> str:
        return self.label or self.name


class EvalModel(Strict):
    """What is scored: the checkpoint `train` wrote (and its base), a local directory or a
    Hub id (served by the stage), or an OpenAI-compatible endpoint that is already running."""

    source: Literal["checkpoint", "local", "hub", "endpoint"] = "checkpoint"
    path: str | None = None  # local: a model directory; hub: a model id
    base_url: str | None = None  # endpoint: e.g. https://host/v1
    name: str | None = None  # endpoint: the model name it serves
    api_key_env: str | None = None  # endpoint: the env var holding its key
    label: str | None = None  # how results name this model (default: from the source)
    # endpoint: what the gateway the agents call it through holds to (and counts with).
    limits: RateLimits = RateLimits()
    price: Price = Price()

    @model_validator(mode="after")
    def _fields(self) -> EvalModel:
        if self.source in ("local", "hub") and not self.path:
            raise ValueError(f"eval.model.source={self.source} needs eval.model.path")
        if self.source == "endpoint" and not (self.base_url and self.name):
            raise ValueError("eval.model.source=endpoint needs base_url and name")
        return self


class Eval(TaskSource):
    benchmark: str  # results/<benchmark>.json
    # local: the held-out split of data/envs; else TaskSource's.
    source: Literal["local", "registry", "terminal_bench", "path"] = "local"
    expected_tasks: int | None = Field(default=None, ge=1)  # the stage fails on another count
    k: int = Field(default=1, ge=1)
    n_concurrent: int = Field(default=2, ge=1)
    # Harbor jobs (model x scaffold) run side by side, each with its own server and
    # n_concurrent trials; more than 1 suits CPU servers that each use one thread.
    parallel_jobs: int = Field(default=1, ge=1)
    agents: list[EvalAgent] = Field(default_factory=lambda: [EvalAgent()], min_length=1)
    agent_timeout_multiplier: float | None = Field(default=None, gt=0)
    model_info: dict[str, Any] = Field(default_factory=dict)
    model: EvalModel = EvalModel()
    serve: Serve = Serve()
    # May trials reach the internet? Real benchmarks' tests download their tools when they
    # run (uv, pytest); a task that declares no-network is cut off all the same.
    network: bool = False
    baseline: bool = True  # with model.source=checkpoint: also score the untuned base model
    harbor_timeout_s: float = Field(default=14400, gt=0)
    # Trials that did not finish for reasons outside the model (Harbor's exception types) are
    # counted apart, never as failures; the stage fails when more than this share is missing.
    infra_error_types: list[str] = Field(default_factory=list)  # conf/eval/common.yaml
    max_unfinished_fraction: float = Field(default=0.05, ge=0, le=1)
    bootstrap: int = Field(default=1000, ge=0)  # resamples of tasks for the 95% interval

    @property
    def what(self) -> str:
        return self.benchmark

    @property
    def path_override(self) -> str:
        return "eval.source=path eval.path=DIR (task dirs)"

    @model_validator(mode="after")
    def _agents(self) -> Eval:
        tags = [a.tag for a in self.agents]
        if len(set(tags)) != len(tags):
            raise ValueError(f"eval.agents: labels must differ, got {tags}")
        return self


class Calibrate(Strict):
    """How hard each environment is: k attempts of a solver model, the share solved."""

    enabled: bool = True
    role: str = "agent"  # the model role whose endpoint solves (models.<role>)
    model: str | None = None  # another model at that endpoint (e.g. the student's)
    k: int = Field(default=4, ge=1)
    split: Literal["train", "all"] = "train"
    agent: EvalAgent = EvalAgent(kwargs={"parser_name": "json"})
    n_concurrent: int = Field(default=4, ge=1)
    agent_timeout_multiplier: float | None = Field(default=None, gt=0)
    harbor_timeout_s: float = Field(default=14400, gt=0)
    # RL-useful: lo < pass rate < hi; export "band" exports those only, "all" every env.
    band: tuple[float, float] = (0.0, 1.0)
    export: Literal["all", "band"] = "all"

    @model_validator(mode="after")
    def _band(self) -> Calibrate:
        lo, hi = self.band
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"band: needs 0 <= lo < hi <= 1, got {list(self.band)}")
        return self


class TrialEnvironment(Strict):
    """Where Harbor runs the trials of rollout, evaluate and envprep's oracle check: Harbor's
    environment type and its options (README: Trial environments)."""

    # The local engine: litecoder's own trial environment and hardening.
    LOCAL: ClassVar[str] = "docker"

    type: str = LOCAL
    kwargs: dict[str, Any] = Field(default_factory=dict)
    n_concurrent: int | None = Field(default=None, ge=1)  # trials at once (None: the stage's)
    api_host: str | None = None  # the provider's API, probed before any trial (offline: fails)
    # Host variables Harbor may see (a provider's credentials); Harbor gets nothing else of
    # this process's environment.
    pass_env: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known(self) -> TrialEnvironment:
        from harbor.models.environment_type import EnvironmentType

        known = sorted(e.value for e in EnvironmentType)
        if self.type not in known:
            raise ValueError(f"environment.type {self.type!r}: not one of Harbor's ({known})")
        return self

    @property
    def local(self) -> bool:
        """Trials on this machine's engine (else on a provider's machines)."""
        return self.type == self.LOCAL

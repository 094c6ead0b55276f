"""Trajectories to a trained student: filter rules, SFT formats, training (stages filter,
sft, train)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from litecoder.config.base import Strict


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

"""Run with the training environment's Python:

    python helpers.py tiny-model --tokenizer DIR --out DIR --spec JSON
    python helpers.py validate --config axolotl.yaml [--config other.yaml ...]
    python helpers.py from-gguf --gguf FILE --out DIR
    torchrun --nproc_per_node=N ... helpers.py train-cpu axolotl.yaml
    python helpers.py trained-tokens --config axolotl.yaml --rows train.jsonl [--n 5]
    python helpers.py needs

`tiny-model` creates a randomly initialised model (architecture and sizes from JSON) with the
given tokenizer; `validate` applies Axolotl's own config validation and prints one line;
`from-gguf` turns a GGUF file into an ordinary Hugging Face directory (fp32 safetensors, the
tokenizer and the chat template from the GGUF metadata); `train-cpu` is `axolotl train` for
several processes on CPU (see train_cpu); `trained-tokens` tokenizes rows exactly as the
recipe's first dataset entry would (Axolotl's own chat_template strategy) and prints, per row,
how many tokens carry a label (the loss) out of how many; `needs` says whether flash-attn and
DeepSpeed are installed and a CUDA device (with bf16) is there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def tiny_model(tokenizer: str, out: str, spec: dict[str, Any]) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(tokenizer)
    model_type = {"Qwen3ForCausalLM": "qwen3", "LlamaForCausalLM": "llama"}[spec["architecture"]]
    cfg = AutoConfig.for_model(
        model_type,
        vocab_size=len(tok),
        hidden_size=spec["hidden_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"],
        intermediate_size=spec["intermediate_size"],
        max_position_embeddings=spec["max_position_embeddings"],
        head_dim=spec["hidden_size"] // spec["num_attention_heads"],
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config = GenerationConfig(
        max_new_tokens=spec["generation_max_new_tokens"],
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"parameters": n, "architecture": spec["architecture"]}))


def from_gguf(gguf: str, out: str) -> None:
    import os

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    d, name = os.path.split(os.path.abspath(gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    # transformers refuses to save a GGUF-loaded model; the same weights in a model built from
    # its config save normally.
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are plain fp32 now
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"parameters": n, "architecture": model.config.architectures[0]}))


def validate(paths: list[str]) -> None:
    """One line per config: `VALID <path>` or `INVALID <path> <reason>`; exit 1 if any is."""
    import yaml
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    bad = False
    for path in paths:
        with open(path) as f:
            cfg = DictDefault(yaml.safe_load(f))
        try:
            validate_config(cfg)
            print(f"VALID {path}")
        except Exception as e:  # reported, one line per config
            print(f"INVALID {path} " + " ".join(str(e).split())[:2000])
            bad = True
    sys.exit(1 if bad else 0)


def train_cpu(config: str) -> None:
    """`axolotl train` for data-parallel processes on CPU (gloo), started by torchrun.

    Axolotl 0.21 assumes that several processes mean several GPUs, in two places: with
    WORLD_SIZE > 1 its P2P check calls torch.cuda.can_device_access_peer, which raises
    RuntimeError (it catches only AssertionError) where no NVIDIA driver is loaded, and
    normalize_config maps the model onto device LOCAL_RANK (a CUDA index). Both are
    corrected here for CPU runs only; everything else is Axolotl's own code path. The caller
    sets ACCELERATE_USE_CPU=true, so that accelerate/transformers take the processes for
    MULTI_CPU data parallelism (gloo), not for independent single-process runs.

    Each process writes one line when it starts and one when Axolotl's trainer has returned:
    Axolotl's own log lines do not reliably carry the rank (some runs' lines had it, others
    not), so they cannot tell which processes ran.
    """
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    print(f"train-cpu: rank {rank} of {world} started", file=sys.stderr, flush=True)
    import torch

    if torch.cuda.is_available():
        sys.exit("train-cpu: a GPU is visible; run `axolotl train` instead")
    import axolotl.cli.config as cli_config
    import axolotl.utils.config as utils_config
    import axolotl.utils.environment as environment

    environment.check_cuda_p2p_support = lambda: True  # no CUDA peers, nothing to check
    normalize = utils_config.normalize_config

    def normalize_on_cpu(cfg: Any) -> None:
        normalize(cfg)
        cfg.device_map = {"": "cpu"}

    utils_config.normalize_config = normalize_on_cpu
    cli_config.normalize_config = normalize_on_cpu  # imported by name there
    from axolotl.cli.train import do_cli

    do_cli(config=config)
    print(f"train-cpu: rank {rank} of {world} finished", file=sys.stderr, flush=True)


def needs() -> None:
    """What this environment offers a recipe, as one JSON line (nothing is imported that
    would initialise CUDA)."""
    import importlib.util

    import torch

    print(json.dumps({
        "flash_attn": importlib.util.find_spec("flash_attn") is not None,
        "deepspeed": importlib.util.find_spec("deepspeed") is not None,
        "cuda": torch.cuda.is_available(),
        "bf16": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
    }))  # fmt: skip


def trained_tokens(config: str, rows: str, n: int) -> None:
    import yaml
    from axolotl.prompt_strategies.chat_template import StrategyLoader
    from axolotl.utils.dict import DictDefault
    from transformers import AutoTokenizer

    with open(config) as f:
        cfg = DictDefault(yaml.safe_load(f))
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer_config or cfg.base_model)
    strategy = StrategyLoader()(tok, cfg, dict(cfg.datasets[0]))
    with open(rows) as f:
        for _, line in zip(range(n), f, strict=False):
            labels = strategy.tokenize_prompt(json.loads(line))["labels"]
            print(json.dumps({"trained": sum(x != -100 for x in labels), "total": len(labels)}))


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tiny-model")
    t.add_argument("--tokenizer", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--spec", required=True)
    g = sub.add_parser("from-gguf")
    g.add_argument("--gguf", required=True)
    g.add_argument("--out", required=True)
    v = sub.add_parser("validate")
    v.add_argument("--config", required=True, action="append")
    c = sub.add_parser("train-cpu")
    c.add_argument("config")
    sub.add_parser("needs")
    k = sub.add_parser("trained-tokens")
    k.add_argument("--config", required=True)
    k.add_argument("--rows", required=True)
    k.add_argument("--n", type=int, default=5)
    a = p.parse_args()
    if a.cmd == "tiny-model":
        tiny_model(a.tokenizer, a.out, json.loads(a.spec))
    elif a.cmd == "from-gguf":
        from_gguf(a.gguf, a.out)
    elif a.cmd == "train-cpu":
        train_cpu(a.config)
    elif a.cmd == "needs":
        needs()
    elif a.cmd == "trained-tokens":
        trained_tokens(a.config, a.rows, a.n)
    else:
        validate(a.config)


if __name__ == "__main__":
    main()

"""Stage `train`: supervised fine-tuning with Axolotl (extra `litecoder[train]`).

The recipe (`conf/train/`) is rendered into an Axolotl YAML in the run directory, checked by
Axolotl's own config validation, and run as `axolotl train` in a subprocess under a timeout,
with telemetry off and W&B wired to the experiment's group. The checkpoint lands in
models/<experiment>/, training metrics in metrics/train.json and the loss curve in
plots/train_loss.csv. For the smoke recipe a tiny model of the students' architecture is
created locally (random weights, the tokenizer the sft stage trained); nothing is downloaded.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from litecoder import models
from litecoder.config import Config
from litecoder.context import StageContext
from litecoder.io import StageError, write_json, write_text
from litecoder.procs import die_with_parent, env_python, stop_process
from litecoder.records import ModelInfo
from litecoder.tracking import StageRun

log = logging.getLogger(__name__)


class TrainError(StageError):
    """Axolotl could not train; the message carries the tail of its log."""


def _resolve(path: str | None, workdir: Path, root: Path) -> str | None:
    """A recipe path: relative to the run dir if it exists there, else to the project root."""
    if path is None:
        return None
    for base in (workdir, root):
        if (base / path).exists():
            return str((base / path).resolve())
    return path  # a hub name


HELPERS = Path(__file__).resolve().parent.parent / "train_env" / "helpers.py"


def train_python(cfg: Config, root: Path) -> Path:
    """The training environment's interpreter (relative paths from the project root)."""
    p = env_python(cfg.train.python, root)
    if p is None:
        raise TrainError(
            f"train.python {cfg.train.python!r} does not exist: create the training environment "
            "(scripts/setup.sh, or python3.12 -m venv .venv-train && .venv-train/bin/pip install "
            "-r requirements-train.txt)"
        )
    return p


def helper(python: Path, *args: str, timeout: float = 600) -> list[str]:
    """Run a train_env helper; its stdout lines, or TrainError with its reason."""
    r = subprocess.run(
        [str(python), str(HELPERS), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 and not any(ln.startswith("INVALID ") for ln in lines):
        tail = (r.stdout + r.stderr).strip().splitlines()
        raise TrainError(tail[-1] if tail else f"{args[0]} failed")
    return lines


def create_tiny_model(cfg: Config, python: Path, tokenizer_path: str, out: Path) -> dict[str, Any]:
    """A randomly initialised model of the configured architecture, saved with its tokenizer."""
    assert cfg.train.tiny_model is not None
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "tiny-model",
        "--tokenizer",
        tokenizer_path,
        "--out",
        str(out),
        "--spec",
        cfg.train.tiny_model.model_dump_json(),
    ]
    info: dict[str, Any] = json.loads(helper(python, *args)[-1])
    log.info(
        "created a %s with %.2fM parameters in %s",
        info["architecture"],
        info["parameters"] / 1e6,
        out,
    )
    return info


def resolve_needs(cfg: Config, python: Path) -> str:
    """Before anything is loaded: what the recipe needs is in the training environment, and
    the attention implementation it will use (said in one line). TrainError otherwise."""
    t = cfg.train
    have = json.loads(helper(python, "needs")[-1])
    env = f"the training environment ({python})"
    how = "make setup-train-gpu, or another train recipe"
    if t.deepspeed and not have["deepspeed"]:
        raise TrainError(f"train.deepspeed {t.deepspeed!r}: DeepSpeed is not installed in {env} "
                         f"({how})")  # fmt: skip
    if t.attention == "flash_attention_2" and not have["flash_attn"]:
        raise TrainError(f"train.attention=flash_attention_2: flash-attn is not installed in "
                         f"{env} ({how}; or train.attention=sdpa)")  # fmt: skip
    if t.precision == "bf16" and t.device == "gpu" and have["cuda"] and not have["bf16"]:
        raise TrainError("train.precision=bf16: this GPU has no bf16 (train.precision=fp16)")
    attention = t.attention
    if attention == "auto":
        attention = "flash_attention_2" if have["flash_attn"] and have["cuda"] else "sdpa"
        why = "flash-attn is installed" if attention != "sdpa" else "flash-attn is not there"
        cost = ""
        if attention == "sdpa" and t.sample_packing:
            cost = (" (packed rows take Axolotl's variable-length path in bf16/fp16; in fp32 "
                    "every call falls back to a dense mask)")  # fmt: skip
        log.info("attention: %s (%s)%s", attention, why, cost)
    return attention


def axolotl_config(
    cfg: Config,
    base: str,
    tokenizer: str | None,
    dataset: Path,
    out: Path,
    attention: str | None = None,
) -> dict[str, Any]:
    t = cfg.train
    y: dict[str, Any] = {
        "base_model": base,
        "tokenizer_config": tokenizer or base,
        "chat_template": "tokenizer_default",
        "datasets": [
            {
                "path": str(dataset),
                "ds_type": "json",
                "type": "chat_template",
                "field_messages": "messages",
                "roles_to_train": ["assistant"],
            }
        ],
        "dataset_prepared_path": str(out / "prepared"),
        "val_set_size": 0.0,
        "output_dir": str(out),
        "sequence_len": t.sequence_len,
        "sample_packing": t.sample_packing,
        "pad_to_sequence_len": t.sample_packing,
        "micro_batch_size": t.micro_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "num_epochs": t.num_epochs,
        "optimizer": t.optimizer,
        "lr_scheduler": t.lr_scheduler,
        "learning_rate": t.learning_rate,
        "warmup_steps": t.warmup_steps,
        "weight_decay": t.weight_decay,
        "bf16": t.precision == "bf16",
        "fp16": t.precision == "fp16",
        "tf32": False,
        "attn_implementation": attention or (t.attention if t.attention != "auto" else "sdpa"),
        "gradient_checkpointing": t.gradient_checkpointing,
        "logging_steps": 1,
        "save_strategy": "no",
        "save_safetensors": True,
        "seed": 0,
        "train_on_inputs": False,
    }
    if t.max_steps:
        y["max_steps"] = t.max_steps
    if t.adapter:
        y.update(
            adapter=t.adapter,
            lora_r=t.lora_r,
            lora_alpha=t.lora_alpha,
            lora_dropout=t.lora_dropout,
            lora_target_linear=True,
        )
        if t.adapter == "qlora":
            y["load_in_4bit"] = True
    if t.deepspeed:
        y["deepspeed"] = t.deepspeed
    if t.fsdp:
        y["fsdp_config"] = dict(t.fsdp)
        y["fsdp_version"] = t.fsdp.get("fsdp_version", 2)
        y["fsdp_config"].pop("fsdp_version", None)
    tr = cfg.tracking
    if tr.mode != "disabled":
        y.update(
            wandb_project=tr.project,
            wandb_entity=tr.entity,
            wandb_mode=tr.mode,
            wandb_name=f"{cfg.experiment.name}-train-axolotl",
        )
    y.update(t.axolotl)
    return y


def axolotl_verdicts(python: Path, paths: list[Path]) -> dict[Path, str | None]:
    """Axolotl's own validation (what `axolotl train` applies at start): None or the reason."""
    out: dict[Path, str | None] = {}
    args = [a for p in paths for a in ("--config", str(p))]
    for line in helper(python, "validate", *args):
        status, _, rest = line.partition(" ")
        if status in ("VALID", "INVALID"):
            path, _, reason = rest.partition(" ")
            out[Path(path)] = reason or None if status == "INVALID" else None
    return out


def validate_axolotl(python: Path, yaml_path: Path) -> None:
    reason = axolotl_verdicts(python, [yaml_path]).get(yaml_path, "no verdict")
    if reason:
        raise TrainError(f"Axolotl rejected {yaml_path}: {reason}")


def launch_cmd(cfg: Config, python: Path, yaml_path: Path) -> list[str]:
    """`axolotl train` under the recipe's launcher. Several processes or machines: accelerate
    or torchrun arguments; the rank and rendezvous of multi-node runs come from the scheduler's
    environment (MACHINE_RANK or SLURM_NODEID, MASTER_ADDR, MASTER_PORT)."""
    t = cfg.train
    cmd = [str(python.parent / "axolotl"), "train", str(yaml_path), "--launcher", t.launcher]
    if t.num_processes == 1 and t.num_machines == 1:
        return cmd
    rank = str(node_rank(cfg))
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = os.environ.get("MASTER_PORT", "29500")
    if t.launcher == "torchrun":
        extra = [f"--nproc_per_node={t.num_processes}", f"--nnodes={t.num_machines}"]
        extra += [f"--node_rank={rank}", f"--master_addr={addr}", f"--master_port={port}"]
        if t.device == "cpu":  # the same torchrun, around Axolotl's trainer fixed for CPU
            return [str(python), "-m", "torch.distributed.run", *extra, str(HELPERS),
                    "train-cpu", str(yaml_path)]  # fmt: skip
    else:
        extra = ["--num_processes", str(t.num_processes * t.num_machines)]
        extra += ["--num_machines", str(t.num_machines)]
        if t.num_machines > 1:
            extra += ["--machine_rank", rank, "--main_process_ip", addr]
            extra += ["--main_process_port", port]
    return [*cmd, "--", *extra]


def node_rank(cfg: Config) -> int:
    """This machine's rank in a multi-node run (0 on a single machine)."""
    if cfg.train.num_machines == 1:
        return 0
    return int(os.environ.get("MACHINE_RANK", os.environ.get("SLURM_NODEID", "0")))


def launch_id() -> str:
    """What every node of one multi-node launch shares (and no other launch does): the
    scheduler's job id, or LITECODER_TRAIN_LAUNCH, else the rendezvous address."""
    for var in ("LITECODER_TRAIN_LAUNCH", "SLURM_JOB_ID"):
        if os.environ.get(var):
            return f"{var}={os.environ[var]}"
    return f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '29500')}"


PREPARED = "prepared.json"  # in the output dir: node 0 has set it up for this launch


def wait_prepared(out: Path, launch: str, timeout_s: float) -> None:
    """On a node other than 0: wait until node 0 has prepared the output dir for this launch
    (the shared file system says so), so that no node reads a stale recipe or model."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if json.loads((out / PREPARED).read_text()).get("launch") == launch:
                return
        except (OSError, ValueError):
            pass
        time.sleep(2)
    raise TrainError(f"node 0 did not prepare {out} for launch {launch} in {timeout_s:.0f}s")


def train_env(cfg: Config, python: Path, workdir: Path) -> dict[str, str]:
    venv_bin = str(python.parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        # Telemetry off: offline, the upload waits minutes on retries after training.
        "AXOLOTL_DO_NOT_TRACK": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "WANDB_RUN_GROUP": cfg.tracking.group or cfg.experiment.name,
        "WANDB_JOB_TYPE": "train",
        "WANDB_MODE": cfg.tracking.mode,
        "WANDB_DIR": str(workdir),  # beside the stage runs of this run / sweep member
        "TOKENIZERS_PARALLELISM": "false",
    }
    t = cfg.train
    if t.device == "cpu" and t.num_processes * t.num_machines > 1:
        env["ACCELERATE_USE_CPU"] = "true"  # data parallel on CPU (gloo), as `accelerate --cpu`
    base = cfg.train.base_model
    if base is None or models.parse(base):  # a local model: nothing to fetch
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_axolotl(cfg: Config, python: Path, cmd: list[str], log_path: Path, workdir: Path) -> float:
    start = time.monotonic()
    with log_path.open("w") as logf:
        proc = subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=train_env(cfg, python, workdir),
            preexec_fn=die_with_parent,
        )
        try:
            code = proc.wait(cfg.train.timeout_s)
        except subprocess.TimeoutExpired:
            stop_process(proc)  # the launcher's workers with it
            raise TrainError(
                f"axolotl train timed out after {cfg.train.timeout_s:.0f}s; log: {log_path}"
            ) from None
    if code != 0:
        text = log_path.read_text(errors="replace")
        tail = [ln for ln in text.strip().splitlines() if ln.strip()][-8:]
        why = (
            "out of memory"
            if re.search(r"out of memory|OutOfMemoryError|Killed", text)
            else f"exit {code}"
        )
        raise TrainError(
            f"axolotl train failed ({why}); last lines of {log_path}:\n" + "\n".join(tail)
        )
    return time.monotonic() - start


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def train_logs(out: Path, log_path: Path) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per-step logs and the final summary: trainer_state.json when saved, else the Trainer's
    log lines (dicts printed per logging step; Axolotl formats the numbers as strings)."""
    for state in sorted(out.glob("**/trainer_state.json")):
        hist = json.loads(state.read_text()).get("log_history", [])
        steps = [h for h in hist if "loss" in h]
        if steps:
            return steps, next((h for h in hist if "train_runtime" in h), {})
    steps, summary = [], {}
    for m in re.finditer(r"\{'[^{}]*\}", log_path.read_text(errors="replace")):
        try:
            d = ast.literal_eval(m.group(0))
        except (ValueError, SyntaxError):
            continue
        nums = {k: x for k, v in d.items() if (x := _num(v)) is not None}
        if "loss" in nums:
            steps.append(nums)
        elif "train_runtime" in nums:
            summary = nums
    for i, r in enumerate(steps, 1):
        r.setdefault("step", float(i))
    return steps, summary


def run(ctx: StageContext) -> dict[str, Any]:
    """models/<experiment>/ (the checkpoint) from data/sft with the train recipe."""
    cfg = ctx.cfg
    track = StageRun("train", cfg, ctx.paths.workdir)
    python = train_python(cfg, ctx.root)
    attention = resolve_needs(cfg, python)  # before anything is loaded or deleted
    dataset = ctx.paths.file("sft", "train")
    if not dataset.exists() or not dataset.read_text().strip():
        raise TrainError(f"{dataset} is missing or empty: nothing to train on")
    out = ctx.paths.models / cfg.experiment.name
    rank, launch = node_rank(cfg), launch_id()
    if rank > 0:
        # Node 0 prepares and finalises the output dir (shared by every node); the others
        # wait for it, train their share, and leave every output to node 0.
        wait_prepared(out, launch, cfg.train.timeout_s)
        seconds = run_axolotl(
            cfg, python, launch_cmd(cfg, python, out / "axolotl.yaml"),
            out / f"train.node{rank}.log", ctx.paths.workdir,
        )  # fmt: skip
        log.info("node %d of launch %s trained its share in %.0fs", rank, launch, seconds)
        return {"node_rank": rank, "train_seconds": round(seconds, 1)}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tokenizer = _resolve(cfg.train.tokenizer, ctx.paths.workdir, ctx.root)
    if cfg.train.base_model is None:
        create_tiny_model(cfg, python, tokenizer or str(ctx.paths.sft / "tokenizer"), out / "init")
        base = str((out / "init").resolve())
        base_rel = str((out / "init").relative_to(ctx.paths.workdir))
    else:
        ref = cfg.train.base_model
        base = (
            models.resolve(ref, python)
            if models.parse(ref)
            else _resolve(ref, ctx.paths.workdir, ctx.root) or ref
        )
        base_rel = ref
    y = axolotl_config(cfg, base, tokenizer, dataset.resolve(), out.resolve(), attention)
    if cfg.train.deepspeed:  # from anywhere: the run dir's, else the project's
        y["deepspeed"] = _resolve(cfg.train.deepspeed, ctx.paths.workdir, ctx.root)
    yaml_path = out / "axolotl.yaml"
    write_text(yaml_path, yaml.safe_dump(y, sort_keys=False))
    validate_axolotl(python, yaml_path)
    if cfg.train.num_machines > 1:
        write_json(out / PREPARED, {"launch": launch})
    log_path = out / "train.log"
    seconds = run_axolotl(
        cfg, python, launch_cmd(cfg, python, yaml_path), log_path, ctx.paths.workdir
    )
    (out / PREPARED).unlink(missing_ok=True)
    weights = (
        list(out.glob("*.safetensors"))
        + list(out.glob("adapter_model.*"))
        + list(out.glob("*.bin"))
    )
    if not weights:
        raise TrainError(f"axolotl exited 0 but wrote no model to {out}; see {log_path}")

    hist, summary = train_logs(out, log_path)
    ctx.paths.train_loss.parent.mkdir(parents=True, exist_ok=True)
    with ctx.paths.train_loss.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        for h in hist:
            w.writerow([int(h.get("step", 0)), h["loss"]])
    info = ModelInfo(
        checkpoint=str(out.relative_to(ctx.paths.workdir)),
        base_model=base_rel,
        recipe=cfg.train.name,
    )
    write_json(ctx.paths.file("models", "info"), info.model_dump())
    losses = [h["loss"] for h in hist]
    track.metrics.update(
        {
            "recipe": cfg.train.name,
            "base_model": base_rel,
            "attention": attention,
            "rows": sum(1 for _ in dataset.open()),
            "steps": len(hist),
            "first_loss": round(losses[0], 4) if losses else None,
            "final_loss": round(losses[-1], 4) if losses else None,
            "min_loss": round(min(losses), 4) if losses else None,
            "train_seconds": round(seconds, 1),
            "trainer_runtime_s": summary.get("train_runtime"),
            "train_loss": summary.get("train_loss"),
            "tokens_per_sec_per_gpu": round(
                sum(h.get("tokens/train_per_sec_per_gpu", 0) for h in hist) / max(1, len(hist)), 1
            ),
        }
    )
    track.histograms = {"loss": losses}
    return track.finish()

#!/usr/bin/env bash
# The GPU recipe as litecoder renders it, checked in minutes on one GPU: `litecoder train` with
# a chosen recipe (its attention resolution, precision, DeepSpeed config, packing, sequence
# length) on one process, a small model of the same family in place of the real one, a few
# steps on the SFT rows of this project's last run; then what happened: the attention path and
# dtype it chose, tokens/s, peak GPU memory, the loss, the saved weights' dtype.
#
#   scripts/gpu_check.sh [RECIPE] [STEPS]          # default: qwen3_4b_instruct 8
#   GPU_CHECK_MODEL=/models/Qwen3-0.6B scripts/gpu_check.sh   # a real small model (offline: a dir)
#
# Without GPU_CHECK_MODEL the model is Qwen3-shaped with random weights (SmolLM2-135M's size,
# the tokenizer of this project's run), made on the spot: nothing is downloaded. Needs
# data/sft/ from a run (`make smoke`) and the training environment (`make setup-train-gpu` for
# DeepSpeed and flash-attn). Extra Hydra overrides go in GPU_CHECK_OVERRIDES.
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=${1:-qwen3_4b_instruct}
steps=${2:-8}
if [ ! -s data/sft/train.jsonl ]; then
  echo "gpu_check: no data/sft/train.jsonl here: run \`make smoke\` first (or put SFT rows there)" >&2
  exit 2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/litecoder-gpu-check.XXXXXX")
mkdir -p "$work/data"
cp -r data/sft "$work/data/sft"
model=()
if [ -n "${GPU_CHECK_MODEL:-}" ]; then
  model=("train.base_model=$GPU_CHECK_MODEL" "train.tokenizer=null" "train.tiny_model=null")
else
  # The tokenizer: the one the sft stage trained, else the last trained checkpoint's.
  tok=data/sft/tokenizer
  if [ ! -d "$tok" ] && [ -s models/model.json ]; then
    tok=$(.venv/bin/python -c 'import json; print(json.load(open("models/model.json"))["checkpoint"])')
  fi
  if [ ! -f "$tok/tokenizer_config.json" ]; then
    echo "gpu_check: no tokenizer (data/sft/tokenizer or models/model.json's checkpoint): run \`make smoke\` first, or set GPU_CHECK_MODEL" >&2
    exit 2
  fi
  mkdir -p "$work/tokenizer"
  cp "$tok"/*token* "$tok"/*.json "$tok"/*.jinja "$work/tokenizer/" 2>/dev/null || true
  rm -f "$work/tokenizer/model.safetensors.index.json" "$work/tokenizer/config.json"
  model=("train.base_model=null" "train.tokenizer=tokenizer"
    "train.tiny_model={architecture: Qwen3ForCausalLM, hidden_size: 576, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, intermediate_size: 1536, max_position_embeddings: 32768}")
fi
echo "gpu_check: recipe $recipe, $steps steps, one process, in $work" >&2
start=$(date +%s)
# shellcheck disable=SC2086
.venv/bin/litecoder train --workdir "$work" "train=$recipe" "train.max_steps=$steps" \
  train.num_processes=1 train.num_machines=1 tracking=disabled experiment.name=gpu-check \
  "${model[@]}" ${GPU_CHECK_OVERRIDES:-}
.venv/bin/python - "$work" "$(( $(date +%s) - start ))" <<'EOF'
import ast, json, platform, subprocess, sys
from pathlib import Path

work, wall = Path(sys.argv[1]), sys.argv[2]
out = work / "models/gpu-check"
m = json.loads((work / "metrics/train.json").read_text())
cfg = (out / "axolotl.yaml").read_text()
logged = []
for line in (out / "train.log").read_text(errors="replace").splitlines():
    line = line.strip()
    if line.startswith("{") and "loss" in line:
        try:
            logged.append(ast.literal_eval(line))
        except (ValueError, SyntaxError):
            pass
memory = {k: v for d in logged for k, v in d.items() if k.startswith("memory/")}
dtypes = set()
for f in out.glob("*.safetensors"):
    with f.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    dtypes |= {v["dtype"] for k, v in header.items() if k != "__metadata__"}
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30).stdout.strip() or "none"
except OSError:
    gpu = "none (no nvidia-smi)"
rows = {
    "machine": f"{platform.node()}: {gpu}",
    "recipe": m["recipe"],
    "attention": m["attention"],
    "precision (rendered)": next((ln.split(":", 1)[1].strip() for ln in cfg.splitlines()
                                  if ln.startswith(("bf16:", "fp16:")) and "true" in ln), "fp32"),
    "saved weights dtype": ", ".join(sorted(dtypes)) or "?",
    "steps": m["steps"],
    "loss first -> last": f"{m['first_loss']} -> {m['final_loss']}",
    "tokens/s per GPU": m["tokens_per_sec_per_gpu"],
    "peak memory (Axolotl's log)": json.dumps(memory) if memory else "not logged",
    "trainer runtime s": m["trainer_runtime_s"],
    "wall s (stage)": wall,
}
width = max(map(len, rows))
for k, v in rows.items():
    print(f"{k:<{width}}  {v}")
EOF

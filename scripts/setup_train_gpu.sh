#!/usr/bin/env bash
# The training environment's optional GPU needs (`make setup-train-gpu`): DeepSpeed (the
# release's recipes name ZeRO-3) and, where it can be built (a CUDA toolkit and a GPU), flash-attn.
# Recipes with `attention: auto` use flash-attn when it is there and sdpa otherwise; a recipe
# that names what is missing stops before launch (`litecoder train`), saying what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-train/bin/python ] || bash scripts/setup.sh
py=.venv-train/bin/python
"$py" -m pip install -q "deepspeed>=0.16"
if "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  "$py" -m pip install -q flash-attn --no-build-isolation \
    || echo "flash-attn could not be built here: recipes with attention: auto use sdpa" >&2
else
  echo "no CUDA device: flash-attn not built (attention: auto uses sdpa)" >&2
fi
"$py" litecoder/train_env/helpers.py needs

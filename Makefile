# `make smoke`: the whole pipeline on the offline smoke defaults. `make test`: the test suite.
# Both set the machine up first (scripts/setup.sh is idempotent).
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export LITELLM_LOCAL_MODEL_COST_MAP := True
export WANDB_MODE ?= offline

.PHONY: setup setup-vllm setup-train-gpu smoke test test-cluster lint bench

setup:
	@bash scripts/setup.sh

# DeepSpeed and (where it builds) flash-attn in .venv-train, for the GPU recipes.
setup-train-gpu: setup
	@bash scripts/setup_train_gpu.sh

# vLLM for GPU evaluation (eval.serve.backend=vllm): .venv-vllm; needs CUDA and the internet.
setup-vllm:
	@bash scripts/setup_vllm.sh

smoke: setup
	dvc repro

test: setup
	bash scripts/test.sh

# Scale-out runs (a two-member sweep + dvc exp, sharded envprep, push/pull through a loopback
# S3 server): CI's second step.
test-cluster: setup
	python -m pytest -q -m cluster

lint: setup
	ruff check litecoder tests benchmarks scripts && ruff format --check litecoder tests benchmarks scripts
	mypy

bench: setup
	python benchmarks/llm_client.py

# `make test` and `make run` build .venv from requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint run clean bench-deps bench device-wheels

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The whole suite, lint included; CI (.ci/run) calls exactly this.
test: lint
	$(PY) -m pytest -n 2 --durations=15 tests

# The README's main job: a small ViT trained on scikit-learn's digits.
run: venv
	$(PY) -m vit_jax.main --config=configs/demo.py --workdir=workdirs/demo

clean:
	rm -rf $(VENV) workdirs .pytest_cache .ruff_cache

# PyTorch + timm for `python -m vit_jax.bench --compare=timm` only (not project
# dependencies). torch 2.13.0+cpu cannot serve: timm needs torchvision, whose
# wheels here are CUDA builds that fail to import beside a CPU torch.
bench-deps: venv
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1 timm==1.0.31

# ViT-B/16 forward and train step against timm and the official code's
# formulation (vit_jax/official_vit.py) on this machine: the defaults (XLA's
# dense layers, the fused CPU attention kernel), MKL's dense layers
# (matmul_impl=mkl: Intel CPUs) and XLA's softmax instead of the kernel
# (attention_impl=explicit), then the plot.
BENCH := $(PY) -m vit_jax.bench --model=ViT-B_16 --batch=8 --resolution=224 --mode=forward,train --compare=timm,official --rounds=5
bench: bench-deps
	$(BENCH)
	$(BENCH) --matmul_impl=mkl
	$(BENCH) --attention_impl=explicit
	$(PY) experiments/bench/plot.py

# Wheels of the pure-Python packages the device tool's GPU image lacks, for
# experiments/bench/gpu.sh (carry .device with the run).
device-wheels: venv
	$(VENV)/bin/pip download -q --no-deps -d .device/wheels ml-collections==1.1.0

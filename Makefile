# `make run` builds .venv from requirements.txt on first use; `make test` adds
# requirements-dev.txt (pytest, ruff, the notebook's kernel) and XLA's TPU and
# GPU compilers (requirements-compile.txt, into .venv/compilers).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.dev-installed
COMPILERS_STAMP := $(VENV)/.compilers-installed

.PHONY: venv test lint fashion-mnist run notebook clean kernels compilers compile-gpu pod-plan bench-deps bench device-wheels

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $(DEV_STAMP)

# XLA's TPU compiler (libtpu) and GPU compiler (the CUDA plugin, with cuDNN) for
# compiling the train step for TPU slices and GPUs on this machine: kept apart
# in .venv/compilers, which only vit_jax.targets.prepare_offline_compilers() (called
# by python -m vit_jax.compile and the pod plan) puts on sys.path, so that no
# other process loads them (their start-up, warnings and libtpu's lock file).
$(COMPILERS_STAMP): $(STAMP) requirements-compile.txt
	$(VENV)/bin/pip install -q --no-deps --target $(VENV)/compilers -r requirements-compile.txt
	touch $(COMPILERS_STAMP)

venv: $(STAMP)

compilers: $(COMPILERS_STAMP)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The whole suite, lint included; CI (.ci/run) calls exactly this.
test: lint $(COMPILERS_STAMP) fashion-mnist
	$(PY) -m pytest -n 2 --durations=15 tests

# Debian's Fashion-MNIST IDX files, which the tests and configs/fashion_mnist.py
# read: installed when missing if run as root (CI); anyone else is told how.
FASHION_MNIST_FILE := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
fashion-mnist:
	@if [ ! -e $(FASHION_MNIST_FILE) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'" \
	      "(Debian/Ubuntu), then make test again." >&2; exit 1; \
	  fi; \
	fi

# The README's main job: a small ViT trained on scikit-learn's digits.
run: venv
	$(PY) -m vit_jax.main --config=configs/demo.py --workdir=workdirs/demo

# notebooks/walkthrough.ipynb run top to bottom as a user runs it (offline it
# trains its own tiny checkpoint); the executed copy lands in workdirs/notebook/.
notebook: $(DEV_STAMP)
	$(VENV)/bin/jupyter nbconvert --to notebook --execute notebooks/walkthrough.ipynb \
	    --output-dir=workdirs/notebook

clean:
	rm -rf $(VENV) workdirs .pytest_cache .ruff_cache

# The optional fused CPU attention kernel, built for this CPU: afterwards
# config.attention="auto" takes it for float32 runs on one CPU device.
kernels: venv
	$(PY) -m vit_jax.kernels build

# Deviceless compiles of the bf16 ViT-B/16, L/16 and H/14 train steps for
# H100s (memory, collectives, cuDNN's fused attention in the HLO); JSON reports
# under experiments/results/compile/.
COMPILE := $(PY) -m vit_jax.compile --dtype=bfloat16
compile-gpu: $(COMPILERS_STAMP)
	$(COMPILE) --config=configs/vit_pretrain.py:model=ViT-B_16,dataset=imagenet21k --target=h100 \
	    --config.batch_size=256 --out=experiments/results/compile/vit_b16_h100.json
	$(COMPILE) --config=configs/vit_pretrain.py:model=ViT-L_16,dataset=imagenet21k --target=h100x8 \
	    --fsdp=8 --remat --config.batch_size=512 --out=experiments/results/compile/vit_l16_h100x8.json
	$(COMPILE) --config=configs/vit_pretrain.py:model=ViT-H_14,dataset=jft --target=h100x8 \
	    --fsdp=8 --remat --config.batch_size=512 --out=experiments/results/compile/vit_h14_h100x8.json

# experiments/results/pod_plan.md: every paper experiment's smallest TPU v3
# slice and H100 count (compiles cached in pod_plan.json; drop --reuse to redo).
pod-plan: $(COMPILERS_STAMP)
	nice -n 10 $(PY) -m experiments.pod_plan --reuse

# PyTorch + timm for the benchmark's --compare=timm only (not project
# dependencies). torch 2.13.0+cpu cannot serve: timm needs torchvision, whose
# wheels here are CUDA builds that fail to import beside a CPU torch.
bench-deps: venv
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1 timm==1.0.31

# ViT-B/16 forward and train step beside timm and the official code's
# formulation (experiments/bench/official_vit.py): XLA's attention (the
# default), then the optional CPU kernel; then the plot.
BENCH := $(PY) -m experiments.bench.bench --model=ViT-B_16 --batch=8 --resolution=224 --mode=forward,train --compare=timm,official --rounds=5
bench: bench-deps
	$(BENCH) --attention=xla
	$(BENCH) --attention=cpu
	$(PY) experiments/bench/plot.py

# Wheels of the pure-Python packages a GPU machine's image may lack, for
# experiments/bench/gpu.sh (copy .device along with the repository).
device-wheels: venv
	$(VENV)/bin/pip download -q --no-deps -d .device/wheels ml-collections==1.1.0

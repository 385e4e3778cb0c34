#!/usr/bin/env bash
# The GPU checks and benchmarks in one command (~8 min on an H200):
#
#   make device-wheels          # once, where pip reaches PyPI: wheels the GPU
#                               # machine lacks, into .device/wheels
#   bash experiments/bench/gpu.sh   # on the GPU machine, from the repository root
#
# It expects JAX (CUDA), Flax, optax, orbax, PyTorch and timm installed, and
# installs ml_collections from .device/wheels (TensorFlow is not needed).
# Everything lands in $OUT: checks.log, bench.log, results.jsonl.
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda
OUT="${OUT:-/tmp/vit_jax-gpu}"
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-index .device/wheels/*.whl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'

# 1. Correctness of the GPU-only paths (cuDNN attention, bf16 step).
python3 experiments/bench/gpu_checks.py 2>&1 | tee "$OUT/checks.log"

# 2. Throughput and MFU (spec peak: H100/H200 989 bf16 TFLOP/s dense). If
# cuDNN's attention failed its checks, everything runs XLA's attention.
IMPL=auto
if grep -q "^FAIL \(cuDNN\|fused\|attention_checks\)" "$OUT/checks.log"; then IMPL=xla; fi
bench() {
  python3 -m experiments.bench.bench --resolution=224 --dtype=bfloat16 --rounds=3 --iters=5 \
    --results="$OUT/results.jsonl" "$@" 2>&1 | grep -v "^INFO\|^WARNING" | tee -a "$OUT/bench.log"
}
# Beside timm and the official code's formulation (stock flax.linen, flax's
# softmax: also what the fused attention buys).
bench --model=ViT-B_16 --batch=256 --mode=train,forward --compare=timm,official --attention=$IMPL
bench --model=ViT-L_16 --batch=128 --mode=train --attention=$IMPL
bench --model=ViT-H_14 --batch=64 --mode=train --attention=$IMPL
python3 experiments/bench/plot.py --results="$OUT/results.jsonl" --out="$OUT/bench_gpu.png" || true

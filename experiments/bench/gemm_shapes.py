"""The matmuls of a ViT-B/16 train step at batch 8, each timed alone in JAX
(XLA:CPU) and in PyTorch on this machine: which of them make up the gap
between our train step and timm's on a CPU (docs/performance.md).

    make bench-deps && .venv/bin/python experiments/bench/gemm_shapes.py

Float32, PyTorch on as many threads as JAX uses (all cores). Prints GFLOP/s
per matmul and the ratio JAX/PyTorch.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

BATCH, TOKENS, WIDTH, MLP, HEADS = 8, 197, 768, 3072, 12  # ViT-B/16 at 224 px.
ROWS, HEAD_DIM, PAIRS = BATCH * TOKENS, WIDTH // HEADS, BATCH * HEADS

# name → (lhs shape, rhs shape, einsum); the backward's are the gradients of
# the forward's two kinds, dense (MLP; the attention projections are alike)
# and per-head attention.
MATMULS = {
    "MLP in, forward": ((ROWS, WIDTH), (WIDTH, MLP), "mk,kn->mn"),
    "MLP out, forward": ((ROWS, MLP), (MLP, WIDTH), "mk,kn->mn"),
    "MLP in, d input": ((ROWS, MLP), (WIDTH, MLP), "mn,kn->mk"),
    "MLP in, d kernel": ((ROWS, WIDTH), (ROWS, MLP), "mk,mn->kn"),
    "MLP out, d kernel": ((ROWS, MLP), (ROWS, WIDTH), "mk,mn->kn"),
    "attention q·k, forward": ((PAIRS, TOKENS, HEAD_DIM),) * 2 + ("bqd,bkd->bqk",),
    "attention p·v, forward": ((PAIRS, TOKENS, TOKENS), (PAIRS, TOKENS, HEAD_DIM), "bqk,bkd->bqd"),
    "attention d p": ((PAIRS, TOKENS, HEAD_DIM),) * 2 + ("bqd,bkd->bqk",),
    "attention d v": ((PAIRS, TOKENS, TOKENS), (PAIRS, TOKENS, HEAD_DIM), "bqk,bqd->bkd"),
}


def flops(lhs_shape, equation: str, out_size: int) -> int:
    """2 × output size × contraction size."""
    lhs, out = equation.replace("->", ",").split(",")[0::2]
    sizes = dict(zip(lhs, lhs_shape, strict=True))
    return 2 * out_size * int(np.prod([sizes[c] for c in lhs if c not in out]))


def seconds_per_call(fn, repeats: int = 20) -> float:
    fn()  # Compile / warm up.
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def time_both(lhs: np.ndarray, rhs: np.ndarray, equation: str) -> tuple[float, float, int]:
    """Seconds per call in JAX and in PyTorch, and the output's size."""
    import torch

    product = jax.jit(lambda a, b: jnp.einsum(equation, a, b))
    jax_lhs, jax_rhs = jnp.asarray(lhs), jnp.asarray(rhs)
    jax_s = seconds_per_call(lambda: product(jax_lhs, jax_rhs).block_until_ready())
    torch_lhs, torch_rhs = torch.from_numpy(lhs), torch.from_numpy(rhs)
    torch_s = seconds_per_call(lambda: torch.einsum(equation, torch_lhs, torch_rhs))
    return jax_s, torch_s, product(jax_lhs, jax_rhs).size


def main() -> None:
    import torch

    torch.set_num_threads(os.cpu_count())
    rng = np.random.default_rng(0)
    print(f"{'matmul':26s} {'JAX':>8s} {'PyTorch':>8s} {'JAX/PyTorch':>12s}   GFLOP/s, float32")
    for name, (lhs_shape, rhs_shape, equation) in MATMULS.items():
        lhs = rng.standard_normal(lhs_shape, np.float32)
        rhs = rng.standard_normal(rhs_shape, np.float32)
        jax_s, torch_s, out_size = time_both(lhs, rhs, equation)
        gflop = flops(lhs_shape, equation, out_size) / 1e9
        print(f"{name:26s} {gflop / jax_s:8.1f} {gflop / torch_s:8.1f} {torch_s / jax_s:12.2f}")


if __name__ == "__main__":
    main()

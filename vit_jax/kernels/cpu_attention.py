"""Fused float32 attention for XLA:CPU, run where `config.attention="cpu"`
asks for it (built on first use, or ahead by `python -m vit_jax.kernels
build` / `make kernels`; "auto" never takes it).

Why: XLA:CPU runs the attention's per-head products (197 × 64 × 197 for
ViT-B/16) at a third of its dense layers' rate or less (40-100 GFLOP/s)
and writes the (B, N, T, T) logits, exponentials and weights through memory
between separate loops. `cpu_attention.cc` does one head at a time with its
T × T weights in cache, heads in parallel, the products in a register-blocked
GEMM of its own and the softmax's exp in a vectorised polynomial; it reads
and writes the projections' (B, T, N, h) layout in place. On the attention
alone XLA's path took 1.6-3.3× its time (docs/performance.md).

Scope: float32, one CPU device (XLA's SPMD partitioner cannot split a custom
call). Attention maps, dropout on the weights, a bias or a mask take XLA's
path (vit_jax.kernels.fused).
"""

import functools
import pathlib
import re

import jax
import jax.numpy as jnp

from vit_jax.kernels import native
from vit_jax.kernels.fused import with_xla_fallback

SOURCE = pathlib.Path(__file__).with_name("cpu_attention.cc")
TARGET = "vit_jax_cpu_attention"
# The FFI targets and the handler symbols of cpu_attention.cc that serve them.
HANDLERS = {
    TARGET: "VitJaxCpuAttention",
    f"{TARGET}_train": "VitJaxCpuAttentionTrain",
    f"{TARGET}_backward": "VitJaxCpuAttentionBackward",
}


def check_target(mesh, dtype) -> None:
    """Refuses a target the kernel cannot serve, with the fix."""
    platform = mesh.devices.flat[0].platform.lower()
    if platform != "cpu" or mesh.size != 1 or jnp.dtype(dtype) != jnp.float32:
        raise ValueError(
            f"config.attention='cpu' runs float32 on one CPU device; this step is compiled "
            f"for {mesh.size} {platform} device(s) in {jnp.dtype(dtype).name}: set "
            "config.attention='auto' (or a one-device CPU mesh, config.mesh=(('data', 1),))."
        )


@functools.cache
def load() -> pathlib.Path:
    """Builds (once) and registers the custom calls; returns the library."""
    library = native.build(SOURCE, "config.attention='cpu'")
    native.register(library, HANDLERS)
    return library


def padded(tokens: int) -> int:
    """The training weights' row length: whole vectors of 16 floats, so that
    the kernel's products write whole vectors (cpu_attention.cc's PaddedLd)."""
    return -(-tokens // 16) * 16


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def attention(q, k, v, token_major: bool = False):
    """softmax(q·kᵀ)·v per head for float32 q, k, v, q already scaled: one
    kernel call, differentiable (the training forward keeps the (B, N, T, T)
    weights for the backward, as XLA's autodiff does). Layout: head-major
    (B, N, T, h), or with `token_major` (B, T, N, h), the dense projections'
    own output, read and written in place."""
    _check_operands(q, k, v)
    result = jax.ShapeDtypeStruct(q.shape, jnp.float32)
    return jax.ffi.ffi_call(TARGET, result)(q, k, v, token_major=token_major)


def _check_operands(q, k, v):
    load()
    if not q.shape == k.shape == v.shape or q.ndim != 4:
        raise ValueError(
            f"the CPU attention kernel takes (B, N, T, h) or (B, T, N, h) q, k, v of one "
            f"shape, got {q.shape}, {k.shape}, {v.shape}."
        )
    if not q.dtype == k.dtype == v.dtype == jnp.float32:
        raise TypeError(f"the CPU attention kernel is float32 only, got {q.dtype}.")


def _attention_forward(q, k, v, token_major):
    _check_operands(q, k, v)
    batch, heads, tokens = (q.shape[0], q.shape[2], q.shape[1]) if token_major else q.shape[:3]
    results = (
        jax.ShapeDtypeStruct(q.shape, jnp.float32),
        jax.ShapeDtypeStruct((batch, heads, tokens, padded(tokens)), jnp.float32),
    )
    out, weights = jax.ffi.ffi_call(f"{TARGET}_train", results)(q, k, v, token_major=token_major)
    return out, (q, k, v, weights)


def _attention_backward(token_major, residuals, d_out):
    q = residuals[0]
    results = (jax.ShapeDtypeStruct(q.shape, jnp.float32),) * 3
    call = jax.ffi.ffi_call(f"{TARGET}_backward", results)
    return tuple(call(*residuals, d_out, token_major=token_major))


attention.defvjp(_attention_forward, _attention_backward)


def _plain(query, key, value):
    """(B, T, heads, head_dim) q, k, v, the layout flax's attention hands over,
    through the kernel in place. q is scaled (B·T·N·h values) rather than the
    logits: a power-of-two scale for head_dim 64, the same bits."""
    query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
    return attention(query, key, value, True)


# The `attention_fn` of config.attention="cpu": float32 through the kernel,
# XLA's path for the rest (maps, dropout, a bias, a mask, 16-bit).
attention_fn = with_xla_fallback(_plain, lambda query: query.dtype == jnp.float32)


_CALL = re.compile(
    rf"custom_call @{TARGET}(|_train|_backward)\(.*token_major = (true|false).*"
    r":\s*\(tensor<(\d+)x(\d+)x(\d+)x(\d+)xf32>"
)
# Products of T × T × h per head: q·kᵀ and p·v forward; dv, dp, dq, dk backward.
_PRODUCTS = {"": 2, "_train": 2, "_backward": 4}


def custom_call_flops(stablehlo_text: str) -> float:
    """FLOPs of the kernel's calls in a lowered computation's text, which
    XLA's cost analysis counts as zero (it cannot see into a custom call)."""
    total = 0
    for kind, token_major, batch, heads, tokens, head_dim in _CALL.findall(stablehlo_text):
        if token_major == "true":  # (B, T, N, h)
            heads, tokens = tokens, heads
        total += _PRODUCTS[kind] * 2 * int(batch) * int(heads) * int(tokens) ** 2 * int(head_dim)
    return float(total)

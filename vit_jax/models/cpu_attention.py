"""Fused float32 attention for XLA:CPU: `attention_impl="cpu"`, and what
"auto" takes for float32 on a CPU backend of one device (`serves_by_default`).

Why: XLA:CPU runs the attention's per-head products (197 × 64 × 197 for
ViT-B/16) at a third of its dense layers' rate or less (40-100 GFLOP/s,
docs/performance.md) and writes the (B, N, T, T) logits, exponentials and
weights through memory between separate loops. `cpu_attention.cc` does one
head at a time with its T × T weights in cache, heads in parallel, the
products in a register-blocked GEMM of its own (98-110 GFLOP/s a core on
the AMD EPYC VM, where single-threaded MKL ran them at 78-89) and the
softmax's exp in a vectorised polynomial. The projections' (B, T, N, h)
output is read and written in place. On the attention alone XLA's softmax
path took 1.6-3.3× its time at every size tried; with XLA's dense layers it
gave the fastest ViT-B/16 forward and train step on the AMD CPUs (1.16-1.34
and 1.14-1.18 of timm's). It serves the attention of `matmul_impl="mkl"` too.

Scope: float32 on the CPU backend, one device (`native.check_mesh` refuses
an explicit "cpu" on a larger mesh; "auto" keeps XLA's softmax there, and
where no C++ compiler can build the kernel). Attention maps, dropout on the
weights and an additive bias take the explicit softmax.
"""

import functools
import logging
import pathlib
import re

import jax
import jax.numpy as jnp

from vit_jax.models import native

SOURCE = pathlib.Path(__file__).with_name("cpu_attention.cc")
TARGET = "vit_jax_cpu_attention"
# The FFI targets and the handler symbols of cpu_attention.cc that serve them.
HANDLERS = {
    TARGET: "VitJaxCpuAttention",
    f"{TARGET}_train": "VitJaxCpuAttentionTrain",
    f"{TARGET}_backward": "VitJaxCpuAttentionBackward",
}


def wanted(impl: str, dtype) -> bool:
    """Whether the attention takes this kernel: asked for (`impl` is the
    model's attention_impl, "auto" resolved), float32, on the CPU."""
    return impl == "cpu" and jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == "cpu"


def serves_by_default(dtype) -> bool:
    """What attention_impl="auto" asks: float32 on a CPU backend of one
    device (custom calls are not partitioned, and a multi-device mesh is the
    caller's to choose), where the kernel builds."""
    lone_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
    return lone_cpu and jnp.dtype(dtype) == jnp.float32 and _builds()


@functools.cache
def _builds() -> bool:
    try:
        load()
    except RuntimeError as error:  # No compiler, or the build failed: say so once.
        logging.warning("attention_impl='auto' keeps XLA's softmax: %s", error)
        return False
    return True


@functools.cache
def load() -> pathlib.Path:
    """Builds (once) and registers the custom calls; returns the library."""
    library = native.build(SOURCE, "attention_impl='cpu'")
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

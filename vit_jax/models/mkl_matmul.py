"""The ViT's dense layers through Intel MKL on the CPU (`matmul_impl="mkl"`).

Why: on Intel CPUs, XLA:CPU's own GEMM (YNNPACK, or Eigen for operands it
must transpose) runs the ViT-B/16 dense shapes at 250-300 GFLOP/s in a step
where MKL, which PyTorch and so timm use, runs them at 330-345
(docs/performance.md). This module compiles mkl_gemm.cc, an XLA FFI custom
call, against the MKL of the `mkl` pip package and offers, with a custom
VJP, `matmul(x, w)`: forward and both backward products (x·W, dy·Wᵀ, xᵀ·dy)
are one `cblas_sgemm` each, transposes included, so no layout copies. The
attention then takes the fused CPU kernel (cpu_attention.py) unless
attention_impl says otherwise.

Scope: float32 on the CPU backend, one device (`native.check_mesh`); other
dtypes and backends keep XLA's ops (`wanted`). On the AMD EPYC VMs XLA's
GEMM was the faster one (MKL's dense layers 0.89-0.95 of timm's speed where
XLA's reach 1.10-1.22), which is why it is opt-in, not the default; there
the default, XLA's dense layers beside the fused CPU attention, is the fast
pair.
"""

import functools
import glob
import os
import pathlib
import re
import sys

import jax
import jax.numpy as jnp

from vit_jax.models import native

SOURCE = pathlib.Path(__file__).with_name("mkl_gemm.cc")
TARGET = "vit_jax_mkl_gemm"
INSTALL_HINT = "install Intel MKL with `pip install mkl==2026.2.1` (requirements.txt pins it)"


def wanted(impl: str, dtype) -> bool:
    """Whether a dense layer's matmul goes through MKL: asked for (`impl` is
    the model's matmul_impl), float32, on the CPU."""
    return impl == "mkl" and jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == "cpu"


def find_mkl_runtime() -> pathlib.Path:
    """libmkl_rt.so.N of the `mkl` wheel (in the environment's lib/), or on
    LD_LIBRARY_PATH."""
    dirs = [os.path.join(sys.prefix, "lib"), *os.environ.get("LD_LIBRARY_PATH", "").split(":")]
    for directory in filter(None, dirs):
        found = sorted(glob.glob(os.path.join(directory, "libmkl_rt.so.*")))
        if found:
            return pathlib.Path(found[-1])
    raise RuntimeError(
        f"matmul_impl='mkl' needs Intel MKL's libmkl_rt, not found in {dirs}: "
        f"{INSTALL_HINT}, {native.FALLBACK}."
    )


@functools.cache
def load() -> pathlib.Path:
    """Builds (once) and registers the custom call; returns the library."""
    runtime = find_mkl_runtime()
    # GNU OpenMP threads (the system's libgomp) rather than Intel's: set
    # before MKL's first call, which is when it reads it.
    os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
    link = (f"-L{runtime.parent}", f"-l:{runtime.name}", f"-Wl,-rpath,{runtime.parent}")
    library = native.build(SOURCE, "matmul_impl='mkl'", link)
    native.register(library, {TARGET: "VitJaxMklGemm"})
    return library


def gemm(a, b, *, transpose_a: bool = False, transpose_b: bool = False):
    """op(a) · op(b) for rank-2 float32 arrays, one MKL call."""
    load()
    m = a.shape[1] if transpose_a else a.shape[0]
    n = b.shape[0] if transpose_b else b.shape[1]
    result = jax.ShapeDtypeStruct((m, n), jnp.float32)
    return jax.ffi.ffi_call(TARGET, result)(a, b, transpose_a=transpose_a, transpose_b=transpose_b)


@jax.custom_vjp
def _matmul_2d(x, w):
    return gemm(x, w)


def _matmul_2d_forward(x, w):
    return gemm(x, w), (x, w)


def _matmul_2d_backward(residuals, dy):
    x, w = residuals
    return gemm(dy, w, transpose_b=True), gemm(x, dy, transpose_a=True)


_matmul_2d.defvjp(_matmul_2d_forward, _matmul_2d_backward)


def matmul(x, w):
    """x (..., K) · w (K, N) → (..., N) in MKL, differentiable."""
    if x.dtype != jnp.float32 or w.dtype != jnp.float32:
        raise TypeError(f"the MKL matmul is float32 only, got {x.dtype} and {w.dtype}.")
    flat = _matmul_2d(x.reshape(-1, x.shape[-1]), w)
    return flat.reshape(*x.shape[:-1], w.shape[-1])


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """lax.dot_general for nn.Dense(dot_general=...): a plain (..., K)·(K, N)
    contraction goes to MKL, anything else to XLA."""
    (lhs_contract, rhs_contract), batch = dimension_numbers
    plain = tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,) and rhs.ndim == 2
    if plain and not batch[0] and lhs.dtype == rhs.dtype == jnp.float32:
        return matmul(lhs, rhs)
    return jax.lax.dot_general(
        lhs, rhs, dimension_numbers, precision, preferred_element_type=preferred_element_type
    )


_GEMM_CALL = re.compile(
    rf"custom_call @{TARGET}\(.*transpose_a = (true|false).*"
    r":\s*\(tensor<(\d+)x(\d+)xf32>, tensor<\d+x\d+xf32>\) -> tensor<(\d+)x(\d+)xf32>"
)


def custom_call_flops(stablehlo_text: str) -> float:
    """FLOPs of the MKL calls in a lowered computation's text, which XLA's
    cost analysis counts as zero (it cannot see into a custom call)."""
    total = 0
    for transpose_a, a_rows, a_cols, m, n in _GEMM_CALL.findall(stablehlo_text):
        k = int(a_rows) if transpose_a == "true" else int(a_cols)
        total += 2 * int(m) * int(n) * k
    return float(total)

"""The ViT's matmuls through Intel MKL on the CPU (`matmul_impl="mkl"`, or
the attention alone with `attention_impl="mkl"`).

Why: on Intel CPUs, XLA:CPU's own GEMM (YNNPACK, or Eigen for operands it
must transpose) runs the ViT-B/16 dense shapes at 250-300 GFLOP/s in a step
where MKL, which PyTorch and so timm use, runs them at 330-345, and the
per-head attention products (197 × 64 × 197) at 40-100 GFLOP/s
(docs/performance.md). This module compiles mkl_gemm.cc, a few XLA FFI
custom calls, against the MKL of the `mkl` pip package, registers them for
the CPU platform and offers, each with a custom VJP:

- `matmul(x, w)`: the dense layers; forward and both backward products
  (x·W, dy·Wᵀ, xᵀ·dy) are one `cblas_sgemm` each, transposes included, so
  no layout copies;
- `attention(q, k, v)`: softmax(q·kᵀ)·v per head with the T × T weights in
  cache, heads in parallel; the backward is one call too. XLA:CPU is slow
  at these per-head products on every CPU measured, so this kernel also
  serves beside XLA's dense layers (`attention_impl="mkl"`).

Scope: float32 on the CPU backend; other dtypes and backends keep XLA's ops
(`wanted`). The custom calls are not partitioned by XLA's SPMD partitioner,
so this is for single-device CPU runs (the trainer refuses it on a larger
mesh). On the AMD EPYC VMs XLA's GEMM was the faster one (1.2-1.75×
PyTorch's MKL-backed matmul; MKL's dense layers 0.92-0.95 of timm's speed
where XLA's reach 1.10-1.22), which is why it is opt-in, not the default,
and why `attention_impl="mkl"` exists on its own.

The library is built once per source/jaxlib/MKL combination with the system
C++ compiler into $VIT_JAX_CACHE (default ~/.cache/vit_jax) and reused.
"""

import ctypes
import functools
import glob
import hashlib
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import jaxlib

SOURCE = pathlib.Path(__file__).with_name("mkl_gemm.cc")
TARGET = "vit_jax_mkl_gemm"
ATTENTION = "vit_jax_mkl_attention"
# The FFI targets and the handler symbols of mkl_gemm.cc that serve them.
HANDLERS = {
    TARGET: "VitJaxMklGemm",
    ATTENTION: "VitJaxMklAttention",
    f"{ATTENTION}_train": "VitJaxMklAttentionTrain",
    f"{ATTENTION}_backward": "VitJaxMklAttentionBackward",
}
INSTALL_HINT = "install Intel MKL with `pip install mkl==2026.2.1` (requirements.txt pins it)"


def wanted(impl: str, dtype) -> bool:
    """Whether a matmul or attention goes through MKL: asked for (`impl` is
    the model's matmul_impl or attention_impl), float32, on the CPU."""
    return impl == "mkl" and jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == "cpu"


def check_mesh(model, mesh) -> None:
    """Refuses a model with an MKL option on a mesh of several devices: XLA's
    SPMD partitioner cannot split the custom calls, so it would gather every
    operand onto each device."""
    options = [f"{name}='mkl'" for name in ("matmul_impl", "attention_impl")
               if getattr(model, name, None) == "mkl"]  # fmt: skip
    if options and mesh.size > 1:
        raise ValueError(
            f"config.model.{' and '.join(options)} runs on one CPU device, the mesh has "
            f"{mesh.size}: set config.mesh to one device (e.g. [('data', 1)]) or use XLA's "
            "ops (matmul_impl='xla', attention_impl='auto')."
        )


def find_mkl_runtime() -> pathlib.Path:
    """libmkl_rt.so.N of the `mkl` wheel (in the environment's lib/), or on
    LD_LIBRARY_PATH."""
    dirs = [os.path.join(sys.prefix, "lib"), *os.environ.get("LD_LIBRARY_PATH", "").split(":")]
    for directory in filter(None, dirs):
        found = sorted(glob.glob(os.path.join(directory, "libmkl_rt.so.*")))
        if found:
            return pathlib.Path(found[-1])
    raise RuntimeError(
        f"matmul_impl='mkl' and attention_impl='mkl' need Intel MKL's libmkl_rt, not found "
        f"in {dirs}: {INSTALL_HINT}, or use XLA's ops (matmul_impl='xla', attention_impl='auto')."
    )


def _cache_dir() -> pathlib.Path:
    default = os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "vit_jax")
    return pathlib.Path(os.environ.get("VIT_JAX_CACHE", default)).expanduser()


# The kernels' own loops (softmax, the attention backward's row sums) are
# compiled for this CPU's vector width: -march=native, so the cache key holds
# the CPU's feature flags too (a home directory shared by different machines).
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w")


def _cpu_features() -> str:
    """The CPU's feature flags (/proc/cpuinfo), or its architecture's name."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return platform.machine()


def build(runtime: pathlib.Path) -> pathlib.Path:
    """The compiled custom call, built on first use (atomic: parallel test
    workers may race to build it)."""
    identity = [SOURCE.read_text(), jaxlib.__version__, str(runtime), *FLAGS, _cpu_features()]
    key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    library = _cache_dir() / f"mkl_gemm-{key}.so"
    if library.exists():
        return library
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise RuntimeError(
            "matmul_impl='mkl' and attention_impl='mkl' compile a small C++ custom call: "
            "install a C++ compiler (Debian: apt install g++), or use XLA's ops "
            "(matmul_impl='xla', attention_impl='auto')."
        )
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=library.parent, suffix=".so", delete=False) as tmp:
        partial = tmp.name
    command = [
        compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", partial,
        f"-L{runtime.parent}", f"-l:{runtime.name}", f"-Wl,-rpath,{runtime.parent}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        os.unlink(partial)
        raise RuntimeError(
            f"building the MKL custom call failed:\n{' '.join(command)}\n{result.stderr}"
        )
    os.replace(partial, library)
    return library


@functools.cache
def load() -> pathlib.Path:
    """Builds (once) and registers the custom call; returns the library."""
    runtime = find_mkl_runtime()
    # GNU OpenMP threads (the system's libgomp) rather than Intel's: set
    # before MKL's first call, which is when it reads it.
    os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
    library = build(runtime)
    compiled = ctypes.cdll.LoadLibrary(str(library))
    for target, symbol in HANDLERS.items():
        handler = jax.ffi.pycapsule(getattr(compiled, symbol))
        jax.ffi.register_ffi_target(target, handler, platform="cpu")
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
_ATTENTION_CALL = re.compile(
    rf"custom_call @{ATTENTION}(|_train|_backward)\(.*token_major = (true|false).*"
    r":\s*\(tensor<(\d+)x(\d+)x(\d+)x(\d+)xf32>"
)
# Products of T × T × h per head: q·kᵀ and p·v forward; dv, dp, dq, dk backward.
_ATTENTION_PRODUCTS = {"": 2, "_train": 2, "_backward": 4}


def custom_call_flops(stablehlo_text: str) -> float:
    """FLOPs of the MKL calls in a lowered computation's text, which XLA's
    cost analysis counts as zero (it cannot see into a custom call)."""
    total = 0
    for transpose_a, a_rows, a_cols, m, n in _GEMM_CALL.findall(stablehlo_text):
        k = int(a_rows) if transpose_a == "true" else int(a_cols)
        total += 2 * int(m) * int(n) * k
    for kind, token_major, batch, heads, tokens, head_dim in _ATTENTION_CALL.findall(
        stablehlo_text
    ):
        if token_major == "true":  # (B, T, N, h)
            heads, tokens = tokens, heads
        per_product = 2 * int(batch) * int(heads) * int(tokens) ** 2 * int(head_dim)
        total += _ATTENTION_PRODUCTS[kind] * per_product
    return float(total)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def attention(q, k, v, token_major: bool = False):
    """softmax(q·kᵀ)·v per head for float32 q, k, v, q already scaled: one MKL
    kernel per call, differentiable (the training forward keeps the
    (B, N, T, T) weights for the backward, as XLA's autodiff does). Layout:
    head-major (B, N, T, h), or with `token_major` (B, T, N, h), the dense
    projections' own output, read and written in place."""
    _check_attention_operands(q, k, v)
    result = jax.ShapeDtypeStruct(q.shape, jnp.float32)
    return jax.ffi.ffi_call(ATTENTION, result)(q, k, v, token_major=token_major)


def _check_attention_operands(q, k, v):
    load()
    if not q.shape == k.shape == v.shape or q.ndim != 4:
        raise ValueError(
            f"the MKL attention takes (B, N, T, h) or (B, T, N, h) q, k, v of one shape, "
            f"got {q.shape}, {k.shape}, {v.shape}."
        )
    if not q.dtype == k.dtype == v.dtype == jnp.float32:
        raise TypeError(f"the MKL attention is float32 only, got {q.dtype}.")


def _attention_forward(q, k, v, token_major):
    _check_attention_operands(q, k, v)
    batch, heads, tokens = (q.shape[0], q.shape[2], q.shape[1]) if token_major else q.shape[:3]
    results = (
        jax.ShapeDtypeStruct(q.shape, jnp.float32),
        # Rows of a whole number of vectors (mkl_gemm.cc's PaddedLd).
        jax.ShapeDtypeStruct((batch, heads, tokens, -(-tokens // 16) * 16), jnp.float32),
    )
    call = jax.ffi.ffi_call(f"{ATTENTION}_train", results)
    out, weights = call(q, k, v, token_major=token_major)
    return out, (q, k, v, weights)


def _attention_backward(token_major, residuals, d_out):
    q = residuals[0]
    results = (jax.ShapeDtypeStruct(q.shape, jnp.float32),) * 3
    call = jax.ffi.ffi_call(f"{ATTENTION}_backward", results)
    return tuple(call(*residuals, d_out, token_major=token_major))


attention.defvjp(_attention_forward, _attention_backward)

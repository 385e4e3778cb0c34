"""The project's C++ kernels for XLA:CPU: compiled on first use, cached,
registered as XLA FFI custom calls.

Two libraries use this: `cpu_attention.cc` (the fused attention of
`attention_impl="cpu"`, plain C++) and `mkl_gemm.cc` (the dense layers'
GEMM of `matmul_impl="mkl"`, linked against Intel MKL). Each is built once
per source/jaxlib/flags/CPU combination with the system C++ compiler into
$VIT_JAX_CACHE (default ~/.cache/vit_jax) and reused; the build is atomic,
since parallel test workers may race to it.

Custom calls are not partitioned by XLA's SPMD partitioner (it would gather
every operand onto each device), so both options are for single-device CPU
runs: `check_mesh` refuses them on a larger mesh.
"""

import ctypes
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jaxlib

# The kernels' loops are compiled for this CPU's vector width: -march=native,
# so the cache key holds the CPU's feature flags too (a home directory shared
# by different machines).
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w")
# What each option needs, for the errors.
FALLBACK = "or use XLA's ops (matmul_impl='xla', attention_impl='auto')"


def cache_dir() -> pathlib.Path:
    default = os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "vit_jax")
    return pathlib.Path(os.environ.get("VIT_JAX_CACHE", default)).expanduser()


def _cpu_features() -> str:
    """The CPU's feature flags (/proc/cpuinfo), or its architecture's name."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return platform.machine()


def build(source: pathlib.Path, option: str, link: tuple[str, ...] = ()) -> pathlib.Path:
    """`source` compiled into a shared library (cached); `option` names the
    model option that needs it, for the error; `link` are extra linker
    arguments (a library to link against)."""
    identity = [source.read_text(), jaxlib.__version__, *FLAGS, *link, _cpu_features()]
    key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    library = cache_dir() / f"{source.stem}-{key}.so"
    if library.exists():
        return library
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise RuntimeError(
            f"{option} compiles a small C++ custom call: install a C++ compiler "
            f"(Debian: apt install g++), {FALLBACK}."
        )
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=library.parent, suffix=".so", delete=False) as tmp:
        partial = tmp.name
    command = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(source), "-o", partial, *link]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        os.unlink(partial)
        raise RuntimeError(f"building {source.name} failed:\n{' '.join(command)}\n{result.stderr}")
    os.replace(partial, library)
    return library


def register(library: pathlib.Path, handlers: dict[str, str]) -> None:
    """Registers each FFI target → handler symbol of `library` for the CPU."""
    compiled = ctypes.cdll.LoadLibrary(str(library))
    for target, symbol in handlers.items():
        handler = jax.ffi.pycapsule(getattr(compiled, symbol))
        jax.ffi.register_ffi_target(target, handler, platform="cpu")


# The model options that put custom calls into the step, with their values.
CUSTOM_CALL_OPTIONS = (("matmul_impl", "mkl"), ("attention_impl", "cpu"))


def check_mesh(model, mesh) -> None:
    """Refuses a model with a custom-call option on a mesh of several devices:
    XLA's SPMD partitioner cannot split the custom calls, so it would gather
    every operand onto each device."""
    options = [f"{name}={value!r}" for name, value in CUSTOM_CALL_OPTIONS
               if getattr(model, name, None) == value]  # fmt: skip
    if options and mesh.size > 1:
        raise ValueError(
            f"config.model.{' and '.join(options)} runs on one CPU device, the mesh has "
            f"{mesh.size}: set config.mesh to one device (e.g. [('data', 1)]) {FALLBACK}."
        )

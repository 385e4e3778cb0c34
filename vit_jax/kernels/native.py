"""The project's C++ kernels for XLA:CPU: built by `python -m vit_jax.kernels
build` (or on first explicit use), cached, registered as XLA FFI custom calls.

A library is built once per source/jaxlib/flags/CPU combination with the
system C++ compiler into $VIT_JAX_CACHE (default ~/.cache/vit_jax) and
reused; the build is atomic, since parallel processes may race to it.
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
FALLBACK = "or use XLA's attention (config.attention='xla')"


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


def library_path(source: pathlib.Path) -> pathlib.Path:
    """Where `source`'s library for this CPU and jaxlib is cached."""
    identity = [source.read_text(), jaxlib.__version__, *FLAGS, _cpu_features()]
    key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    return cache_dir() / f"{source.stem}-{key}.so"


def build(source: pathlib.Path, option: str) -> pathlib.Path:
    """`source` compiled into a shared library (cached); `option` names the
    config option that needs it, for the error."""
    library = library_path(source)
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
    command = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(source), "-o", partial]
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

"""glibc malloc settings that let XLA:CPU reuse its step buffers instead of
page-faulting them in again on every step.

XLA:CPU allocates the temporaries of each execution as one buffer (a ViT-B/16
train step at batch 8: 2.2 GB) with posix_memalign, from its worker threads.
glibc serves a request that large from a fresh mmap in the thread's arena and
unmaps it on free, so every step faults the whole buffer in again, page by
page: 580,000 minor faults and 0.8 s of kernel time a step on a 2-core VM, and
2-7 s when another process (timm in the benchmark) ran in between (the VM
re-backs each page, up to 12 µs a fault). With one arena, no mmap and no
trimming the freed buffer stays in the heap and the next step reuses it:
0 faults, and that train step 4.2 → 3.4-3.7 s alone, 5.3 → 3.5-3.7 s beside
timm (docs/performance.md). The cost: the process keeps its peak heap until it
exits, and all threads share one malloc arena.

The settings take hold only for threads that have not yet picked an arena, so
the benchmark (--host_memory=reuse) calls `reuse_freed_memory()` before
TensorFlow or JAX's backend start their thread pools. A process that imports vit_jax as a library
can call it first thing, or set the same through the environment:
GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736
"""

import ctypes
import os
import platform
import sys

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
NEVER_TRIM = -1  # mallopt takes an int; glibc stores it as size_t: SIZE_MAX.


def _jax_backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    return sys.modules["jax"]._src.xla_bridge.backends_are_initialized()


def reuse_freed_memory() -> bool:
    """Sets one arena, no mmap and no trimming in glibc's malloc; True if set.

    Does nothing (False) off glibc, when GLIBC_TUNABLES already makes a
    glibc.malloc choice (the user's wins), or when TensorFlow was imported
    already or JAX's backend has started (their threads hold arenas of their
    own, whose large blocks would still be mapped and unmapped per step: too
    late to help)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if "tensorflow" in sys.modules or _jax_backend_started():
        return False
    libc = ctypes.CDLL(None)
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER_TRIM))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)

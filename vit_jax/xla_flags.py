"""XLA flags that the entry points (vit_jax.main, vit_jax.bench) set before
JAX starts its backend; XLA reads XLA_FLAGS once, at that moment."""

import os

import jax

# XLA:CPU schedules for concurrency by default. Scheduling for memory cuts a
# ViT-B/16 train step's temporaries by 30% (batch 8: 2,231 → 1,553 MiB) and,
# on the 2-core AVX-512 VM, runs it 5-10% faster (docs/performance.md). Only
# the CPU compiler reads it. Per-jit `compiler_options` accept the option but
# do not apply it (measured: same memory), so it has to be process-wide.
CPU_MEMORY_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def add(flags: str, why: str) -> None:
    """Appends `flags` to XLA_FLAGS unless every one of them is already there."""
    if all(flag in os.environ.get("XLA_FLAGS", "") for flag in flags.split()):
        return
    if jax._src.xla_bridge.backends_are_initialized():
        raise SystemExit(
            f"{why}: JAX's backend already started in this process; run it in a fresh "
            f"process or set XLA_FLAGS='{flags}' in the environment."
        )
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def prefer_memory_scheduling_on_cpu() -> None:
    """Sets CPU_MEMORY_SCHEDULER unless XLA_FLAGS already decides the scheduler
    (XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=true keeps
    XLA's default), or the backend has started (then it is too late: no-op)."""
    flag_name = CPU_MEMORY_SCHEDULER.split("=")[0]
    if flag_name in os.environ.get("XLA_FLAGS", ""):
        return
    if jax._src.xla_bridge.backends_are_initialized():
        return
    add(CPU_MEMORY_SCHEDULER, "the CPU memory scheduler")

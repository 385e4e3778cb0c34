"""experiments.bench.host_memory: with it, XLA:CPU's freed step buffers are reused
instead of page-faulted in again on every call; a user's GLIBC_TUNABLES and
an already-imported TensorFlow leave malloc alone. Each case needs a fresh
process (the settings are process-wide and must precede the threads)."""

import os
import subprocess
import sys

SCRIPT = """
import resource, sys
{before}
from experiments.bench import host_memory
set_now = host_memory.reuse_freed_memory()
import jax, jax.numpy as jnp

@jax.jit
def step(x):  # 2 temporaries of 64 MiB: one 128 MiB buffer per call.
    return jnp.sum(jnp.sin(x) @ jnp.cos(x).T)

x = jnp.ones((2048, 8192), jnp.float32)
step(x).block_until_ready()
step(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
print(set_now, faults)
"""
BUFFER_PAGES = 2 * 2048 * 8192 * 4 // 4096


def run(before: str = "", tunables: str | None = None) -> tuple[bool, float]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(before=before)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    set_now, faults = out.stdout.split()[-2:]
    return set_now == "True", float(faults)


def test_freed_step_buffers_are_reused_instead_of_faulted_in_again():
    set_now, faults = run()
    # glibc's default (a user's tunable wins, so this one keeps it): every
    # call maps the buffer afresh and faults each of its pages in again.
    kept_default, default_faults = run(tunables="glibc.malloc.arena_max=8")
    assert set_now and not kept_default
    assert default_faults > BUFFER_PAGES / 2, default_faults
    assert faults < default_faults / 10, (faults, default_faults)


def test_too_late_after_tensorflow_started_does_nothing():
    set_now, _ = run(before="import tensorflow")
    assert not set_now

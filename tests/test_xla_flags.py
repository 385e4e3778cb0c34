"""vit_jax.xla_flags: the CPU memory scheduler is switched on for the entry
points, a user's own choice in XLA_FLAGS wins, and nothing changes once the
backend runs. Each case needs a process whose backend has not started yet."""

import os
import subprocess
import sys

from vit_jax.xla_flags import CPU_MEMORY_SCHEDULER

SCRIPT = """
import os, jax
from vit_jax import xla_flags
if {start_backend}:
    jax.devices()
xla_flags.prefer_memory_scheduling_on_cpu()
jax.numpy.ones(2).block_until_ready()
print(os.environ.get("XLA_FLAGS", ""))
"""


def flags_after(user_flags: str, start_backend: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if user_flags:
        env["XLA_FLAGS"] = user_flags
    script = SCRIPT.format(start_backend=start_backend)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def test_memory_scheduler_is_added_to_the_users_flags():
    assert flags_after("") == CPU_MEMORY_SCHEDULER
    user = "--xla_force_host_platform_device_count=2"
    assert flags_after(user) == f"{user} {CPU_MEMORY_SCHEDULER}"


def test_users_scheduler_choice_wins():
    keep_default = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    assert flags_after(keep_default) == keep_default


def test_no_change_once_the_backend_runs():
    assert flags_after("", start_backend=True) == ""

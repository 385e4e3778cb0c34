"""XLA flags the benchmark sets (--xla_flags, --simulate_devices) before JAX
starts its backend: XLA reads XLA_FLAGS once, at that moment."""

import os

import jax


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

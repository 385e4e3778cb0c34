"""Which attention function a training step runs: chosen once, before
anything is traced, from `config.attention` and the devices the step is
compiled for (its mesh), never from the running process's default backend
or from what this machine has built or cached, so that one config computes
the same thing everywhere.

  auto   XLA's attention, except cuDNN's fused attention for 16-bit compute
         on GPUs (the same softmax(q·kᵀ/√d)·v, fused, in the compute dtype)
  xla    XLA's attention (vit_jax.models.attention.dot_product_attention)
  cudnn  cuDNN's fused attention (GPU, 16-bit)
  cpu    the optional fused float32 kernel for one CPU device
         (vit_jax.kernels.cpu_attention), built on first use

Every back-end computes on the same parameters, so a checkpoint trained
under one loads under any other.
"""

from collections.abc import Callable

import jax.numpy as jnp

from vit_jax.kernels import cpu_attention, cudnn_attention
from vit_jax.models.attention import dot_product_attention

ATTENTION_BACKENDS = ("auto", "xla", "cudnn", "cpu")
SIXTEEN_BIT = (jnp.bfloat16, jnp.float16)


def choose_attention(name: str, mesh, dtype=jnp.float32) -> tuple[Callable, str]:
    """The attention function `name` means on `mesh`'s devices for `dtype`
    compute, and a line that says what was chosen and why."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"config.attention={name!r}; choose one of {ATTENTION_BACKENDS}.")
    platform = mesh.devices.flat[0].platform.lower()
    if name == "xla":
        return dot_product_attention, "XLA's attention (asked for)"
    if name == "cudnn":
        return cudnn_attention.attention_fn, "cuDNN's fused attention (asked for)"
    if name == "cpu":
        cpu_attention.check_target(mesh, dtype)
        cpu_attention.load()  # Builds the kernel on first use.
        return cpu_attention.attention_fn, "the fused CPU attention kernel (asked for)"
    if platform in ("gpu", "cuda", "rocm") and jnp.dtype(dtype) in SIXTEEN_BIT:
        why = f"cuDNN's fused attention ({jnp.dtype(dtype).name} on GPU)"
        return cudnn_attention.attention_fn, why
    return dot_product_attention, f"XLA's attention ({mesh.size} {platform} device(s))"

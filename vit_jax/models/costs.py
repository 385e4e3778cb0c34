"""Parameter and FLOP counts measured on the model itself, never by formula.

FLOPs come from XLA's cost analysis of the jitted forward pass, so they count
what the compiled model computes (attention, norms and all). Pre-training
compute follows App. Table 6 of the paper: forward+backward = 3 × forward.
"""

import jax
import jax.numpy as jnp
import numpy as np


def abstract_params(model, resolution: int | tuple[int, int], channels: int = 3):
    """The parameter tree as ShapeDtypeStructs: nothing is allocated."""
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    images = jax.ShapeDtypeStruct((1, height, width, channels), jnp.float32)
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(images.shape, images.dtype))
    )
    return variables["params"]


def count_params(params) -> int:
    """Number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def forward_flops(
    model, resolution: int | tuple[int, int], batch_size: int = 1, channels: int = 3
) -> float:
    """FLOPs of one inference forward pass of `batch_size` images (XLA's count,
    a multiply-add is 2 FLOPs)."""
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    params = abstract_params(model, (height, width), channels)
    images = jax.ShapeDtypeStruct((batch_size, height, width, channels), jnp.float32)
    lowered = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False)).lower(params, images)
    return lowered_flops(lowered)


def lowered_flops(lowered) -> float:
    """XLA's FLOP count of a lowered computation (a custom call counts zero:
    count the model on its default attention for its FLOPs)."""
    costs = lowered.cost_analysis()
    if isinstance(costs, list | tuple):  # Older JAX: one dict per computation.
        costs = costs[0]
    return float(costs["flops"])


def pretraining_exaflops(forward_flops_per_image: float, images_seen: float) -> float:
    """Pre-training compute as in App. Table 6: 3 × forward FLOPs × images seen."""
    return 3 * forward_flops_per_image * images_seen / 1e18

"""Attention probabilities of every encoder block, read from a ViT forward pass.

The model sows each block's softmax output into the 'attention' collection when
that collection is mutable (see vit_jax.models.vit); this module stacks them
in layer order, which is what rollout and attention distance consume.
"""

import math
import re

import jax.numpy as jnp
import numpy as np

_BLOCK = re.compile(r"encoderblock_(\d+)$")


def attention_maps(model, params, images) -> np.ndarray:
    """Returns the (layers, batch, heads, tokens, tokens) attention of `images`.

    Row q of a map is the distribution over keys that query token q attends
    to, so every row sums to 1.
    """
    _, state = model.apply(
        {"params": params}, jnp.asarray(images), train=False, mutable=["attention"]
    )
    blocks = state["attention"]["Transformer"]
    numbered = sorted((int(_BLOCK.match(name).group(1)), name) for name in blocks)
    return np.stack(
        [
            np.asarray(blocks[name]["MultiHeadDotProductAttention_0"]["weights"][0])
            for _, name in numbered
        ]
    )


def token_grid(num_patches: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """The (rows, cols) patch grid of `num_patches` tokens cut from an image of
    `image_size` pixels; derived from the sequence so ViTs and hybrids (whose
    ResNet stem downsamples first) are handled alike."""
    height, width = image_size
    rows = round(math.sqrt(num_patches * height / width))
    if rows == 0 or num_patches % rows:
        raise ValueError(f"{num_patches} patches do not tile a {height}x{width} image.")
    return rows, num_patches // rows

"""Attention probabilities of every encoder block, read from a ViT forward pass.

The model sows each block's softmax output into the 'attention' collection when
that collection is mutable (see vit_jax.models.vit); this module stacks them
in layer order, which is what rollout and attention distance consume.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np

_BLOCK = re.compile(r"encoderblock_(\d+)$")


def attention_maps(model, params, images) -> np.ndarray:
    """Returns the (layers, batch, heads, tokens, tokens) attention of `images`.

    Row q of a map is the distribution over keys that query token q attends
    to, so every row sums to 1.
    """
    forward = lambda p, x: model.apply({"params": p}, x, train=False, mutable=["attention"])
    _, state = jax.jit(forward)(params, jnp.asarray(images))
    blocks = state["attention"]["Transformer"]
    numbered = sorted((int(_BLOCK.match(name).group(1)), name) for name in blocks)
    return np.stack(
        [
            np.asarray(blocks[name]["MultiHeadDotProductAttention_0"]["weights"][0])
            for _, name in numbered
        ]
    )

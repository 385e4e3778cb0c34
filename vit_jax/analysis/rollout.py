"""Attention rollout (Abnar & Zuidema, 2020), as used for Fig. 6 of the paper.

Each block mixes tokens by its attention and also passes them on unchanged
through the residual connection. Rollout models one block as the head-averaged
attention plus the identity, re-normalised so rows stay distributions, and
composes the blocks by matrix product: row q of the result says how much each
input token contributed to output token q.
"""

import numpy as np


def attention_rollout(maps: np.ndarray) -> np.ndarray:
    """(layers, batch, heads, T, T) attention → (batch, T, T) rolled-out attention."""
    maps = np.asarray(maps, np.float64)
    if maps.ndim != 5 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"expected (layers, batch, heads, T, T) maps, got shape {maps.shape}.")
    tokens = maps.shape[-1]
    joint = np.broadcast_to(np.eye(tokens), maps.shape[1:2] + (tokens, tokens))
    for layer in maps:
        mixed = layer.mean(axis=1) + np.eye(tokens)  # The residual stream.
        mixed /= mixed.sum(axis=-1, keepdims=True)
        joint = mixed @ joint  # Later layers act on the output of earlier ones.
    return joint


def output_to_patches(
    rollout: np.ndarray, grid: tuple[int, int], has_class_token: bool
) -> np.ndarray:
    """(batch, T, T) rollout → (batch, rows, cols) relevance of each patch.

    With a class token the map is its row; with global average pooling the
    output is the mean of the patch tokens, so their rows are averaged. Each
    map is normalised to a distribution over patches; a map with no mass on
    any patch (the class token ignored the image) is uniform, since then no
    patch is preferred.
    """
    rollout = np.asarray(rollout, np.float64)
    if has_class_token:
        relevance = rollout[:, 0, 1:]
    else:
        relevance = rollout.mean(axis=1)
    rows, cols = grid
    if relevance.shape[-1] != rows * cols:
        raise ValueError(
            f"rollout has {relevance.shape[-1]} patch tokens but the grid {rows}x{cols} "
            f"has {rows * cols}; check has_class_token and the image size."
        )
    mass = relevance.sum(axis=-1, keepdims=True)
    uniform = np.full_like(relevance, 1.0 / relevance.shape[-1])
    relevance = np.where(mass > 0, relevance / np.where(mass > 0, mass, 1.0), uniform)
    return relevance.reshape(-1, rows, cols)

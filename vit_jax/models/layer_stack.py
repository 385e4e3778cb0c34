"""The scanned encoder's parameters and the published per-block layout.

A ViT built with scan=True keeps its L blocks as one tree with a leading layer
axis, `Transformer/encoderblock/...` of shape (L, ...); the published .npz
files and the unrolled model have `Transformer/encoderblock_{i}/...` per
block. The two hold the same numbers: block i is slice i. vit_jax.checkpoint
converts at its boundary (save_npz writes the published layout, and
load_pretrained stacks a checkpoint for a scanned model), so files stay
interchangeable with the official releases, timm and the unrolled model.

    stacked = stack_layers(load_npz("ViT-B_16.npz"))    # for get_model(..., scan=True)
    published = unstack_layers(scanned_params)           # the published tree

Functions on flat dicts take keys as tuples of names
(flax.traverse_util.flatten_dict's form).
"""

import re

import numpy as np
from flax import traverse_util

from vit_jax.errors import CheckpointError
from vit_jax.models.vit import SCANNED_BLOCKS

_BLOCK = re.compile(r"encoderblock_(\d+)")


def is_stacked(flat: dict) -> bool:
    """Whether a flat parameter dict holds scanned (stacked) blocks."""
    return any(SCANNED_BLOCKS in key for key in flat)


def unstack_flat(flat: dict) -> dict:
    """Scanned blocks (L, ...) → encoderblock_{i} slices; the rest as it is."""
    out = {}
    for key, value in flat.items():
        if SCANNED_BLOCKS not in key:
            out[key] = value
            continue
        position = key.index(SCANNED_BLOCKS)
        for layer in range(value.shape[0]):
            name = (*key[:position], f"encoderblock_{layer}", *key[position + 1 :])
            out[name] = value[layer]
    return out


def stack_flat(flat: dict) -> dict:
    """encoderblock_{i} → one scanned tree of (L, ...) arrays; the rest as it is.
    The blocks must be numbered 0..L-1 with the same leaves in each."""
    out, layers = {}, {}
    for key, value in flat.items():
        match = next((i for i, name in enumerate(key) if _BLOCK.fullmatch(name)), None)
        if match is None:
            out[key] = value
            continue
        stacked_key = (*key[:match], SCANNED_BLOCKS, *key[match + 1 :])
        layers.setdefault(stacked_key, {})[int(_BLOCK.fullmatch(key[match])[1])] = value
    for key, by_layer in layers.items():
        if sorted(by_layer) != list(range(len(by_layer))):
            raise CheckpointError(
                f"{'/'.join(key)}: blocks {sorted(by_layer)} are not numbered 0..L-1, so they "
                "cannot be stacked for a scanned model: check that the checkpoint is complete."
            )
        out[key] = np.stack([np.asarray(by_layer[i]) for i in range(len(by_layer))])
    return out


def match_layout(flat: dict, reference: dict) -> dict:
    """`flat` in the layout of `reference` (stacked if it is, else per block)."""
    flat = unstack_flat(flat)
    return stack_flat(flat) if is_stacked(reference) else flat


def stack_layers(params) -> dict:
    """A per-block parameter tree (published layout) for a scanned model."""
    return traverse_util.unflatten_dict(stack_flat(traverse_util.flatten_dict(params)))


def unstack_layers(params) -> dict:
    """A scanned model's parameter tree in the per-block (published) layout."""
    return traverse_util.unflatten_dict(unstack_flat(traverse_util.flatten_dict(params)))

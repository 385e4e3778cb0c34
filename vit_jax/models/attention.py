"""The attention computation of Eq. 2's MSA, softmax(q·kᵀ/√d_h + bias)·v, as
functions that flax's `nn.MultiHeadDotProductAttention` takes as its
`attention_fn`: the model's parameters never depend on which one runs.

`dot_product_attention` is the model's default: XLA's (`jax.nn`), or the
softmax written out where attention maps are asked for or attention dropout
applies. The fused back-ends (cuDNN's, the optional CPU kernel) live in
vit_jax.kernels, which chooses one from the config and the step's devices:
the model only receives the function.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def dot_product_attention(
    query,
    key,
    value,
    bias=None,
    mask=None,
    *,
    dropout_rng=None,
    dropout_rate: float = 0.0,
    deterministic: bool = True,
    module=None,
    implementation: str | None = None,
):
    """(B, T, heads, head_dim) q, k, v → (B, T, heads, head_dim). Flax passes
    only the arguments a function names, so every back-end names them all.

    `module` is set by flax when the block asks to sow the maps: the (B,
    heads, T, T) weights then go into its 'attention' collection (what
    vit_jax.analysis reads). The softmax is computed in float32.
    """
    dropout = not deterministic and dropout_rate > 0.0
    if module is None and not dropout:
        return jax.nn.dot_product_attention(
            query, key, value, bias=bias, mask=mask, implementation=implementation
        )
    scale = jnp.asarray(1 / np.sqrt(query.shape[-1]), query.dtype)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query * scale, key)
    if bias is not None:
        logits = logits + bias.astype(logits.dtype)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(query.dtype)
    if module is not None:
        module.sow("attention", "weights", weights)
    if dropout:  # Per example and head, as the official code (broadcast_dropout=False).
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0).astype(weights.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, value)


def relative_attention(attention_fn: Callable, offset_keys) -> Callable:
    """`attention_fn` with App. D.4's 1-D relative attention: each (query,
    key) pair of tokens has the offset p_q − p_k, each offset a learned
    embedding; an extra attention of the original queries against those
    embeddings as keys gives logits that are added to the content logits as
    a bias before the softmax. `offset_keys`: (2T − 1, heads, head_dim), row
    o for the offset o − (T − 1).
    """

    def attend(
        query,
        key,
        value,
        bias=None,
        mask=None,
        *,
        dropout_rng=None,
        dropout_rate: float = 0.0,
        deterministic: bool = True,
        module=None,
    ):
        tokens = query.shape[1]
        scale = jnp.asarray(1 / np.sqrt(query.shape[-1]), query.dtype)
        # Every query against every offset's key, then each pair's own offset.
        per_offset = jnp.einsum("bqhd,ohd->bhqo", query * scale, offset_keys.astype(query.dtype))
        offsets = jnp.arange(tokens)[:, None] - jnp.arange(tokens)[None, :] + tokens - 1
        index = jnp.broadcast_to(offsets, (*per_offset.shape[:2], tokens, tokens))
        relative = jnp.take_along_axis(per_offset, index, axis=-1)
        return attention_fn(
            query, key, value, relative if bias is None else bias + relative, mask,
            dropout_rng=dropout_rng, dropout_rate=dropout_rate,
            deterministic=deterministic, module=module,
        )  # fmt: skip

    return attend


def with_bias(attention_fn: Callable, bias) -> Callable:
    """`attention_fn` with an additive logit bias: flax's attention layer passes
    a mask but no bias, so a position bias is bound here."""
    return functools.partial(attention_fn, bias=bias)

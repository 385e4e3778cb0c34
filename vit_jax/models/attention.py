"""The attention computation of Eq. 2's MSA, softmax(q·kᵀ/√d_h + bias)·v, as
functions that flax's `nn.MultiHeadDotProductAttention` takes as its
`attention_fn`: the model's parameters never depend on which one runs.

`dot_product_attention` is the model's default: XLA's (`jax.nn`), or the
softmax written out where attention maps are asked for or attention dropout
applies. `resolve(name, mesh, dtype)` turns the trainer's one config string
(`config.attention`) into one of these for the devices the step is compiled
for, once, before anything is traced.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# "auto": cuDNN's fused kernel for 16-bit compute on GPUs, the optional CPU
# kernel (vit_jax.kernels) for float32 on one CPU device where it is built,
# else XLA's. The others ask for one back-end.
BACKENDS = ("auto", "xla", "cudnn", "cpu")
SIXTEEN_BIT = (jnp.bfloat16, jnp.float16)


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


def with_xla_fallback(plain: Callable, serves: Callable = lambda query: True) -> Callable:
    """An `attention_fn` that computes softmax(q·kᵀ/√d)·v with `plain(query,
    key, value)`, a fused kernel, and takes `dot_product_attention` for what
    a fused kernel does not do here: maps, attention dropout, a bias, a mask,
    or queries `serves` refuses (a dtype)."""

    def attention_fn(
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
        dropout = not deterministic and dropout_rate > 0.0
        if bias is None and mask is None and module is None and not dropout and serves(query):
            return plain(query, key, value)
        return dot_product_attention(
            query, key, value, bias, mask, dropout_rng=dropout_rng, dropout_rate=dropout_rate,
            deterministic=deterministic, module=module,
        )  # fmt: skip

    return attention_fn


def _cudnn_any_length(query, key, value):
    """cuDNN's fused flash attention (GPU, 16-bit), for any sequence length.

    jax's cuDNN training rule refuses odd lengths (197 = 14² + 1 tokens) with
    "Unsupported sequence length": the tokens are padded to an even count and
    the padding masked out through the sequence lengths cuDNN takes.
    """
    batch, tokens = query.shape[:2]
    padded = tokens + tokens % 2
    if padded == tokens:
        return jax.nn.dot_product_attention(query, key, value, implementation="cudnn")
    pad = lambda x: jnp.pad(x, ((0, 0), (0, padded - tokens), (0, 0), (0, 0)))  # noqa: E731
    lengths = jnp.full((batch,), tokens, jnp.int32)
    out = jax.nn.dot_product_attention(
        pad(query),
        pad(key),
        pad(value),
        query_seq_lengths=lengths,
        key_value_seq_lengths=lengths,
        implementation="cudnn",
    )
    return out[:, :tokens]


cudnn_attention = with_xla_fallback(_cudnn_any_length)


def resolve(name: str, mesh, dtype=jnp.float32) -> tuple[Callable, str]:
    """The attention function `name` means on `mesh`'s devices for `dtype`
    compute, and a line that says what was chosen and why."""
    if name not in BACKENDS:
        raise ValueError(f"config.attention={name!r}; choose one of {BACKENDS}.")
    platform = mesh.devices.flat[0].platform.lower()
    on_gpu = platform in ("gpu", "cuda", "rocm")
    sixteen_bit = jnp.dtype(dtype) in SIXTEEN_BIT
    if name == "xla":
        return dot_product_attention, "XLA's attention (asked for)"
    if name == "cudnn":
        return cudnn_attention, "cuDNN's fused attention (asked for)"
    if name == "cpu":
        from vit_jax.kernels import cpu_attention  # Builds the kernel: asked for.

        cpu_attention.check_target(mesh, dtype)
        cpu_attention.load()
        return cpu_attention.attention_fn, "the fused CPU attention kernel (asked for)"
    if on_gpu and sixteen_bit:
        return cudnn_attention, f"cuDNN's fused attention ({jnp.dtype(dtype).name} on GPU)"
    if platform == "cpu" and mesh.size == 1 and jnp.dtype(dtype) == jnp.float32:
        from vit_jax.kernels import cpu_attention

        if cpu_attention.is_built():
            cpu_attention.load()
            return cpu_attention.attention_fn, "the fused CPU attention kernel (built)"
    return dot_product_attention, f"XLA's attention ({mesh.size} {platform} device(s))"


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

"""cuDNN's fused flash attention for 16-bit compute on NVIDIA GPUs: what
config.attention="auto" takes there, and "cudnn" asks for."""

import jax
import jax.numpy as jnp

from vit_jax.kernels.fused import with_xla_fallback


def _any_length(query, key, value):
    """cuDNN's fused attention for any sequence length.

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


attention_fn = with_xla_fallback(_any_length)

"""Position embeddings (Eq. 1 and App. D.4, Table 8).

learn_1d       one learned (1, T, D) table added to the tokens, the paper's default
learn_2d       a row and a column table of D/2 each, concatenated per patch
relative       App. D.4's 1-D relative attention: a learned key per head for
               each token offset, attended to by the queries (RelativePositionKeys)
relative_bias  a learned scalar bias per head and 2-D patch offset (not the
               paper's; a simpler relative variant)
none           no position information
"""

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.models.resnet import Dtype

POSEMB_KINDS = ("learn_1d", "learn_2d", "relative", "relative_bias", "none")


class AddPositionEmbs(nn.Module):
    """Learned position embeddings added to the token sequence (Eq. 1).

    `learn_1d` is one (1, T, D) table, the paper's default. `learn_2d` (App.
    D.4) learns a row and a column table of D/2 each and concatenates them
    per patch; the class token gets an embedding of its own.
    """

    kind: str
    grid: tuple[int, int]
    has_class_token: bool
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.normal(stddev=0.02)
        hidden = x.shape[-1]
        if self.kind == "learn_1d":
            table = self.param("pos_embedding", init, (1, x.shape[1], hidden), self.param_dtype)
            return x + table
        if self.kind == "learn_2d":
            if hidden % 2:
                raise ValueError(f"posemb='learn_2d' needs an even hidden size, got {hidden}.")
            rows, cols = self.grid
            row = self.param("pos_embedding_row", init, (rows, hidden // 2), self.param_dtype)
            col = self.param("pos_embedding_col", init, (cols, hidden // 2), self.param_dtype)
            table = jnp.concatenate(
                [
                    jnp.broadcast_to(row[:, None], (rows, cols, hidden // 2)),
                    jnp.broadcast_to(col[None, :], (rows, cols, hidden // 2)),
                ],
                axis=-1,
            ).reshape(1, rows * cols, hidden)
            if self.has_class_token:
                cls = self.param("pos_embedding_cls", init, (1, 1, hidden), self.param_dtype)
                table = jnp.concatenate([cls, table], axis=1)
            return x + table
        return x  # 'none', and the relative kinds (which act inside the attention).


class RelativePositionKeys(nn.Module):
    """App. D.4's relative position embeddings: one learned key per head for
    each 1-D offset p_q − p_k of two tokens, (2T − 1, heads, head_dim)."""

    num_tokens: int
    num_heads: int
    head_dim: int

    @nn.compact
    def __call__(self):
        shape = (2 * self.num_tokens - 1, self.num_heads, self.head_dim)
        return self.param("rel_keys", nn.initializers.normal(stddev=0.02), shape)


class RelativePositionBias(nn.Module):
    """posemb='relative_bias': a learned per-head attention bias indexed by the
    2-D offset of two patches, a simpler variant than App. D.4's. The class
    token's interactions get three extra entries (token→cls, cls→token, cls→cls)."""

    grid: tuple[int, int]
    num_heads: int
    has_class_token: bool

    @nn.compact
    def __call__(self):
        rows, cols = self.grid
        num_offsets = (2 * rows - 1) * (2 * cols - 1)
        table = self.param(
            "rel_embedding", nn.initializers.zeros, (num_offsets + 3, self.num_heads)
        )
        r, c = jnp.meshgrid(jnp.arange(rows), jnp.arange(cols), indexing="ij")
        r, c = r.reshape(-1), c.reshape(-1)
        index = (r[:, None] - r[None, :] + rows - 1) * (2 * cols - 1) + (
            c[:, None] - c[None, :] + cols - 1
        )
        if self.has_class_token:
            n = rows * cols
            index = jnp.pad(index, ((1, 0), (1, 0)))
            index = index.at[0, 1:].set(num_offsets).at[1:, 0].set(num_offsets + 1)
            index = index.at[0, 0].set(num_offsets + 2)
            assert index.shape == (n + 1, n + 1)
        return table[index].transpose(2, 0, 1)  # (heads, T, T)

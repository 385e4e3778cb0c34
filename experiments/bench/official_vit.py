"""The ViT's encoder computed the way the official vision_transformer code
computes it: the baseline of `python -m experiments.bench.bench --compare=official`.

The official models_vit.py composes stock flax.linen layers: each block's
attention is `nn.MultiHeadDotProductAttention` with flax's own
`dot_product_attention` (the softmax written out in einsums), its MLP
`nn.Dense` → `nn.gelu` (flax's default: the tanh approximation) →
`nn.Dense`. vit_jax's blocks use the same layers with the attention
computation passed in (XLA's `jax.nn.dot_product_attention` by default,
cuDNN's or the CPU kernel when chosen). This module keeps vit_jax's patch
embedding and head and swaps in the official encoder on the same
parameters, so the benchmark's ratio ours/official measures the attention
back-end alone, with the same trainer around both; tests check that both
give the same outputs. For the plain ViTs (class token, learned 1-D
position embeddings), the models `--compare=timm` covers too.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.models import get_model
from vit_jax.models.vit import VisionTransformer

# The fields of vit_jax's VisionTransformer that the official formulation
# shares; every other field must keep its default.
SHARED_FIELDS = ("num_classes", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")


class OfficialEncoderBlock(nn.Module):
    mlp_dim: int
    num_heads: int
    dtype: Any
    dropout_rate: float
    approximate_gelu: bool

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        dropout = functools.partial(nn.Dropout(self.dropout_rate), deterministic=deterministic)
        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            broadcast_dropout=False,
            deterministic=True,  # The paper trains without attention dropout.
        )(y, y)
        x = x + dropout(y)
        y = nn.LayerNorm(dtype=self.dtype)(x)
        mlp = OfficialMlp(
            self.mlp_dim, self.dtype, self.dropout_rate, self.approximate_gelu, name="MlpBlock_0"
        )
        return x + mlp(y, deterministic=deterministic)


class OfficialMlp(nn.Module):
    """Dense → GELU → dropout → Dense → dropout."""

    mlp_dim: int
    dtype: Any
    dropout_rate: float
    approximate_gelu: bool

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        dropout = functools.partial(nn.Dropout(self.dropout_rate), deterministic=deterministic)
        dense = functools.partial(
            nn.Dense,
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6),
        )
        y = dropout(nn.gelu(dense(self.mlp_dim)(x), approximate=self.approximate_gelu))
        return dropout(dense(x.shape[-1])(y))


class OfficialPositionEmbs(nn.Module):
    @nn.compact
    def __call__(self, x):
        init = nn.initializers.normal(stddev=0.02)
        return x + self.param("pos_embedding", init, (1, *x.shape[1:]))


class OfficialTransformer(nn.Module):
    num_layers: int
    mlp_dim: int
    num_heads: int
    dtype: Any
    dropout_rate: float
    approximate_gelu: bool

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = OfficialPositionEmbs(name="posembed_input")(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        for i in range(self.num_layers):
            x = OfficialEncoderBlock(
                self.mlp_dim,
                self.num_heads,
                self.dtype,
                self.dropout_rate,
                self.approximate_gelu,
                name=f"encoderblock_{i}",
            )(x, deterministic=not train)
        return nn.LayerNorm(name="encoder_norm")(x)


class OfficialViT(VisionTransformer):
    """vit_jax's ViT with the official code's encoder: same tree, same calls."""

    approximate_gelu: bool = True  # flax's nn.gelu default, as the official code calls it.

    def encode(self, tokens, grid, *, train: bool):
        cls = self.param("cls", nn.initializers.zeros, (1, 1, tokens.shape[-1]))
        cls = jnp.tile(cls.astype(tokens.dtype), (tokens.shape[0], 1, 1))
        return OfficialTransformer(
            self.num_layers,
            self.mlp_dim,
            self.num_heads,
            self.dtype,
            self.dropout_rate,
            self.approximate_gelu,
            name="Transformer",
        )(jnp.concatenate([cls, tokens], axis=1), train=train)


def get_official_model(name: str, num_classes: int | None, **overrides) -> OfficialViT:
    """`name`'s architecture (a plain ViT) in the official formulation;
    `overrides` may set dtype, dropout_rate and approximate_gelu."""
    ours = get_model(name, num_classes)
    differing = [
        field.name
        for field in dataclasses.fields(ours)
        if field.name not in (*SHARED_FIELDS, "parent", "name")
        and getattr(ours, field.name) != field.default
    ]
    if differing:
        raise ValueError(
            f"--compare=official covers the plain ViTs (class token, learned 1-D position "
            f"embeddings); {name} sets {', '.join(differing)}."
        )
    return OfficialViT(**{field: getattr(ours, field) for field in SHARED_FIELDS}, **overrides)

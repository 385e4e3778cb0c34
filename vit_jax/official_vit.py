"""The ViT computed the way the official vision_transformer code computes it:
the baseline of `python -m vit_jax.bench --compare=official`.

The official models_vit.py composes stock flax.linen layers: each block's
attention is `nn.MultiHeadDotProductAttention` (q, k and v projected to
(batch, tokens, heads, head_dim) by DenseGeneral, then flax's explicit
softmax), its MLP `nn.Dense` → `nn.gelu` (flax's default: the tanh
approximation) → `nn.Dense`. vit_jax's model keeps that parameter tree and
changes only how it is computed (head-major projections, the fused CPU
attention kernel, cuDNN's on GPU, the exact GELU). This module takes the
same parameters, so the benchmark's ratio ours/official measures those
changes alone, with the same trainer around both; tests check that both
give the same outputs. Written from the paper's equations and the published
parameter tree, for the plain ViTs (class token, learned 1-D position
embeddings), the models `--compare=timm` covers too.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.models import get_model

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


class OfficialViT(nn.Module):
    """`apply({'params': p}, images, train=...)` → logits, as vit_jax's model."""

    num_classes: int | None
    patch_size: tuple[int, int]
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    approximate_gelu: bool = True  # flax's nn.gelu default, as the official code calls it.

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        x = nn.Conv(
            self.hidden_size,
            self.patch_size,
            strides=self.patch_size,
            padding="VALID",
            dtype=self.dtype,
            name="embedding",
        )(images.astype(self.dtype))
        batch, rows, cols, hidden = x.shape
        cls = self.param("cls", nn.initializers.zeros, (1, 1, hidden))
        x = jnp.concatenate(
            [jnp.tile(cls.astype(x.dtype), (batch, 1, 1)), x.reshape(batch, rows * cols, hidden)],
            axis=1,
        )
        x = OfficialTransformer(
            self.num_layers,
            self.mlp_dim,
            self.num_heads,
            self.dtype,
            self.dropout_rate,
            self.approximate_gelu,
            name="Transformer",
        )(x, train=train)
        if not self.num_classes:
            return x[:, 0]
        head = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")
        return head(x[:, 0]).astype(jnp.float32)


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

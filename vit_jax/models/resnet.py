"""BiT ResNets (Kolesnikov et al., 2020) and the ResNet stem of the R50+ViT hybrids.

Both use weight-standardised convolutions and GroupNorm(32) instead of
BatchNorm (Sec. 4.1). The hybrid stem follows the official
vision_transformer code exactly (post-activation bottlenecks, parameter
names conv_root, gn_root, block{s}/unit{u}/{conv1..3, gn1..3, conv_proj,
gn_proj}); the BiT baselines are BiT's pre-activation ResNet-v2.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any
WS_EPSILON = 1e-5  # The official hybrids' weight-standardisation epsilon.


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """Blocks per stage and width multiplier: (3, 4, 6, 3), 1 is ResNet-50x1."""

    num_layers: tuple[int, ...]
    width_factor: float = 1  # 0.5 gives the tiny test stems (GroupNorm needs 32+ channels).


def weight_standardize(kernel, axis=(0, 1, 2), eps=WS_EPSILON):
    """Zero mean, unit standard deviation per output channel."""
    kernel = kernel - jnp.mean(kernel, axis=axis)
    return kernel / (jnp.std(kernel, axis=axis) + eps)


class StdConv(nn.Conv):
    """A convolution whose kernel is weight-standardised on every call."""

    def param(self, name, *args, **kwargs):
        param = super().param(name, *args, **kwargs)
        if name == "kernel":
            param = weight_standardize(param)
        return param


class _Bottleneck(nn.Module):
    """What both bottleneck kinds share: widths, stride and layer factories."""

    features: int
    strides: tuple[int, int] = (1, 1)
    dtype: Dtype = jnp.float32

    def conv(self, features, kernel, strides, name):
        return StdConv(features, kernel, strides, use_bias=False, dtype=self.dtype, name=name)

    def norm(self, name, **kwargs):
        return nn.GroupNorm(dtype=self.dtype, name=name, **kwargs)

    def needs_projection(self, x) -> bool:
        return x.shape[-1] != self.features * 4 or self.strides != (1, 1)


class ResidualUnit(_Bottleneck):
    """Post-activation bottleneck of the official hybrids (stride on the 3x3)."""

    @nn.compact
    def __call__(self, x):
        conv, norm = self.conv, self.norm
        residual = x
        if self.needs_projection(x):
            residual = conv(self.features * 4, (1, 1), self.strides, "conv_proj")(residual)
            residual = norm("gn_proj")(residual)
        y = nn.relu(norm("gn1")(conv(self.features, (1, 1), (1, 1), "conv1")(x)))
        y = nn.relu(norm("gn2")(conv(self.features, (3, 3), self.strides, "conv2")(y)))
        y = conv(self.features * 4, (1, 1), (1, 1), "conv3")(y)
        # Zero-init of the last norm makes each unit start as the identity.
        y = norm("gn3", scale_init=nn.initializers.zeros)(y)
        return nn.relu(residual + y)


class PreActBottleneck(_Bottleneck):
    """BiT's pre-activation bottleneck (ResNet-v2, stride on the 3x3)."""

    @nn.compact
    def __call__(self, x):
        conv, norm = self.conv, self.norm
        out = nn.relu(norm("gn1")(x))
        residual = x
        if self.needs_projection(x):
            residual = conv(self.features * 4, (1, 1), self.strides, "conv_proj")(out)
        y = conv(self.features, (1, 1), (1, 1), "conv1")(out)
        y = conv(self.features, (3, 3), self.strides, "conv2")(nn.relu(norm("gn2")(y)))
        y = conv(self.features * 4, (1, 1), (1, 1), "conv3")(nn.relu(norm("gn3")(y)))
        return y + residual


class ResNetStage(nn.Module):
    """`num_units` units of bottleneck width `features`; the first may stride."""

    num_units: int
    features: int
    first_strides: tuple[int, int]
    unit_cls: type[nn.Module]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for unit in range(self.num_units):
            strides = self.first_strides if unit == 0 else (1, 1)
            x = self.unit_cls(self.features, strides, dtype=self.dtype, name=f"unit{unit + 1}")(x)
        return x


def _stages(x, spec: ResNetSpec, unit_cls, dtype):
    """Stage s has width 64·wf·2^s; stages after the first start with stride 2."""
    width = int(64 * spec.width_factor)
    for stage, num_units in enumerate(spec.num_layers):
        first_strides = (2, 2) if stage > 0 else (1, 1)
        x = ResNetStage(
            num_units,
            width * 2**stage,
            first_strides,
            unit_cls,
            dtype=dtype,
            name=f"block{stage + 1}",
        )(x)
    return x


def _root(x, spec: ResNetSpec, dtype, norm: bool):
    """7x7 stride-2 standardised conv (+ GroupNorm, ReLU in the hybrid) and a
    3x3 stride-2 max-pool: total stride 4."""
    x = StdConv(
        int(64 * spec.width_factor), (7, 7), (2, 2), use_bias=False, dtype=dtype, name="conv_root"
    )(x)
    if norm:
        x = nn.relu(nn.GroupNorm(dtype=dtype, name="gn_root")(x))
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")


def hybrid_stem(x, spec: ResNetSpec, dtype=jnp.float32):
    """The feature map a hybrid ViT tokenises. Call it inside a compact method:
    its modules then belong to the caller, at the root of the parameter tree.

    (3, 4, 6, 3) ends after stage 4 (stride 32, R50+ViT-*/32); (3, 4, 9) moves
    stage 4's units into stage 3 and ends there (stride 16, R50+ViT-*/16).
    """
    return _stages(_root(x, spec, dtype, norm=True), spec, ResidualUnit, dtype)


class BiTResNet(nn.Module):
    """The ResNet (BiT) baselines of the paper. Input: NHWC images in [-1, 1].

    `num_classes=None` (or 0) returns the pooled representation.
    """

    num_classes: int | None
    spec: ResNetSpec
    dtype: Dtype = jnp.float32
    # Lays out the head's input (batch, features) for the devices of a sharded
    # step; the trainer passes vit_jax.sharding.batch_constraint (see there).
    constrain_batch: Callable | None = None

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        del train  # No dropout or batch statistics in BiT.
        x = _root(images.astype(self.dtype), self.spec, self.dtype, norm=False)
        x = _stages(x, self.spec, PreActBottleneck, self.dtype)
        x = nn.relu(nn.GroupNorm(dtype=self.dtype, name="norm_pre_head")(x))
        x = jnp.mean(x, axis=(1, 2))
        self.sow("intermediates", "representation", x)
        if not self.num_classes:
            return x
        if self.constrain_batch is not None:
            x = self.constrain_batch(x)
        head = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")
        return head(x).astype(jnp.float32)

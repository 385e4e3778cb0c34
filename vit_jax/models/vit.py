"""The Vision Transformer (Dosovitskiy et al., 2021, Sec. 3.1, Eq. 1-4).

The parameter tree is the official vision_transformer repo's linen tree, so
its published .npz checkpoints load unchanged (see vit_jax.checkpoint):

  embedding/{kernel,bias}, cls, Transformer/posembed_input/pos_embedding,
  Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0}, Transformer/encoder_norm, pre_logits, head.

With scan=True the blocks are one tree, Transformer/encoderblock/..., stacked
on a leading layer axis (vit_jax.models.layer_stack converts; the checkpoint
functions do it at their boundary).

Two collections can be made mutable in `apply` for analysis:
  'attention':     per block, the (B, heads, T, T) attention probabilities;
  'intermediates': the pre-logits representation, for linear probes.

The attention computation itself is a function (`attention_fn`, default
XLA's, see vit_jax.models.attention); a faster back-end is passed in by the
trainer (chosen by vit_jax.kernels) and never changes the parameters.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models.attention import dot_product_attention, relative_attention, with_bias
from vit_jax.models.posemb import (
    POSEMB_KINDS,
    AddPositionEmbs,
    RelativePositionBias,
    RelativePositionKeys,
)
from vit_jax.models.resnet import Dtype, ResNetSpec, hybrid_stem

LAYER_NORM_EPSILON = 1e-6  # The official code's value; flax's default is 1e-6 too.
CLASSIFIERS = ("token", "gap")
# "tanh": flax's nn.gelu default, which the official MlpBlock calls: the
# published checkpoints were trained with it. "exact": x·Φ(x), timm's.
GELU_FORMS = ("tanh", "exact")

# What a rematerialised block keeps from its forward pass for the backward
# (`remat_policy`, with remat=True): "full" keeps only the block's input and
# recomputes everything; "dots" keeps every matmul output (flax's Dense layers
# and the attention's q·kᵀ and p·v) and recomputes the element-wise work;
# "dots_no_batch" keeps the Dense outputs but recomputes the attention matrices,
# whose (batch, heads, T, T) size is what remat mostly saves.
REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
# Scanning over the blocks (scan=True) needs one block definition for all
# layers: these position embeddings give each layer its own parameters
# inside its attention (App. D.4), which the scanned block has no place for.
UNSCANNABLE_POSEMBS = ("relative", "relative_bias")
# The scanned blocks' parameters: one tree under this name with the layers
# stacked on a leading axis (vit_jax.models.layer_stack converts to and from
# the published encoderblock_{i} layout).
SCANNED_BLOCKS = "encoderblock"

xavier_uniform = nn.initializers.xavier_uniform()
tiny_normal = nn.initializers.normal(stddev=1e-6)  # Official bias init of the MLP.


def exact_gelu(x):
    """x·Φ(x), Φ the standard normal CDF, as 0.5·x·(1 + erf(x/√2)) (timm's form).

    jax.nn.gelu(approximate=False) evaluates Φ through erfc(-x/√2), which
    XLA:CPU computes about 4× slower than erf; the two agree to float32
    rounding (max 1.1e-6 from the float64 value over [-12, 12]). 16-bit
    inputs are evaluated in float32, where 1 + erf keeps the tail.
    """
    compute = jnp.promote_types(x.dtype, jnp.float32)
    y = x.astype(compute)
    return (0.5 * y * (1.0 + jax.lax.erf(y * np.sqrt(0.5).astype(compute)))).astype(x.dtype)


class MlpBlock(nn.Module):
    """Dense(mlp_dim) → GELU → Dense(D), dropout after each Dense (Eq. 3)."""

    mlp_dim: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        dense = lambda features: nn.Dense(  # noqa: E731
            features, dtype=self.dtype, kernel_init=xavier_uniform, bias_init=tiny_normal
        )
        y = dense(self.mlp_dim)(x)
        y = nn.gelu(y, approximate=True) if self.gelu == "tanh" else exact_gelu(y)
        y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        y = dense(x.shape[-1])(y)
        return nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)


class Encoder1DBlock(nn.Module):
    """One pre-norm block: z' = MSA(LN(z)) + z ; z = MLP(LN(z')) + z' (Eq. 2-3).

    `attention_fn` is this layer's softmax(q·kᵀ/√d_h)·v, handed over by the
    encoder (the back-end's, with relative positions bound in where the
    position embedding acts inside the attention).
    """

    mlp_dim: int
    num_heads: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    gelu: str = "tanh"
    attention_fn: Callable = dot_product_attention

    @nn.compact
    def __call__(self, x, deterministic: bool):
        # Stochastic depth drops a whole residual branch per example.
        drop_path = lambda y: nn.Dropout(  # noqa: E731
            self.drop_path_rate, broadcast_dims=tuple(range(1, y.ndim))
        )(y, deterministic=deterministic)
        y = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype, name="LayerNorm_0")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            kernel_init=xavier_uniform,
            broadcast_dropout=False,
            dropout_rate=self.attention_dropout_rate,
            attention_fn=self.attention_fn,
            name="MultiHeadDotProductAttention_0",
        )(y, deterministic=deterministic, sow_weights=self.is_mutable_collection("attention"))
        y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        x = x + drop_path(y)
        y = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype, name="LayerNorm_1")(x)
        y = MlpBlock(self.mlp_dim, self.dtype, self.dropout_rate, self.gelu, name="MlpBlock_0")(
            y, deterministic=deterministic
        )
        return x + drop_path(y)


class ScannedEncoder1DBlock(Encoder1DBlock):
    """The block as nn.scan's step: (carry, per-layer input) → (carry, output)."""

    def __call__(self, x, deterministic: bool):
        return super().__call__(x, deterministic), None


class Encoder(nn.Module):
    """Position embeddings, dropout, L encoder blocks and the final LayerNorm.

    `scan` runs the blocks as one lax.scan over parameters stacked on a
    leading layer axis (Transformer/encoderblock/...): the same function, a
    program L times smaller to compile; see vit_jax.models.layer_stack.
    """

    num_layers: int
    mlp_dim: int
    num_heads: int
    grid: tuple[int, int]
    has_class_token: bool
    posemb: str = "learn_1d"
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth: float = 0.0
    remat: bool = False
    remat_policy: str = "full"  # One of REMAT_POLICIES; used when remat is True.
    scan: bool = False
    gelu: str = "tanh"
    attention_fn: Callable = dot_product_attention

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = AddPositionEmbs(self.posemb, self.grid, self.has_class_token, name="posembed_input")(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        block = dict(
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            dtype=self.dtype,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            gelu=self.gelu,
        )
        if self.scan:
            x = self.scanned_blocks(block, x, train)
        else:
            block_cls = self.rematerialised(Encoder1DBlock)
            for i in range(self.num_layers):
                x = block_cls(
                    **block,
                    # Linear in depth, as timm and big_vision do; 0 is the paper.
                    drop_path_rate=self.stochastic_depth * i / max(self.num_layers - 1, 1),
                    attention_fn=self.layer_attention(i, x),
                    name=f"encoderblock_{i}",
                )(x, not train)
        return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name="encoder_norm")(x)

    def rematerialised(self, block_cls):
        """`block_cls` under remat with the chosen policy, or as it is."""
        if not self.remat:
            return block_cls
        # `deterministic` is a Python bool, static for remat (argument 2 incl. self).
        return nn.remat(block_cls, static_argnums=(2,), policy=REMAT_POLICIES[self.remat_policy])

    def scanned_blocks(self, block: dict, x, train: bool):
        """The L blocks as one nn.scan: one block's program, parameters and
        dropout rngs split over a leading layer axis."""
        if self.posemb in UNSCANNABLE_POSEMBS or self.stochastic_depth:
            raise ValueError(
                f"scan=True needs the same block in every layer; posemb={self.posemb!r} "
                f"(relative positions of App. D.4 are per-layer parameters inside the "
                f"attention) and stochastic_depth={self.stochastic_depth} (a per-layer "
                "rate) are not: use a learned or no position embedding and no stochastic "
                "depth, or scan=False."
            )
        blocks = nn.scan(
            self.rematerialised(ScannedEncoder1DBlock),
            variable_axes={"params": 0, "attention": 0, "intermediates": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=nn.broadcast,
            length=self.num_layers,
        )
        x, _ = blocks(**block, attention_fn=self.attention_fn, name=SCANNED_BLOCKS)(x, not train)
        return x

    def layer_attention(self, layer: int, x) -> Callable:
        """Layer `layer`'s attention function: the back-end's, with the
        relative position embeddings (App. D.4), which act inside the
        attention, bound in; their parameters are the encoder's relpos_{i}."""
        if self.posemb == "relative":
            head_dim = x.shape[-1] // self.num_heads
            keys = RelativePositionKeys(
                x.shape[1], self.num_heads, head_dim, name=f"relpos_{layer}"
            )()
            return relative_attention(self.attention_fn, keys)
        if self.posemb == "relative_bias":
            bias = RelativePositionBias(
                self.grid, self.num_heads, self.has_class_token, name=f"relpos_{layer}"
            )()
            return with_bias(self.attention_fn, bias[None])
        return self.attention_fn


class VisionTransformer(nn.Module):
    """ViT and the R50+ViT hybrids. Input: NHWC images in [-1, 1].

    `num_classes=None` (or 0) returns the representation y (after pre-logits
    when there is one) instead of logits.
    """

    num_classes: int | None
    patch_size: tuple[int, int]
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    classifier: str = "token"
    posemb: str = "learn_1d"
    representation_size: int | None = None
    resnet: ResNetSpec | None = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth: float = 0.0
    dtype: Dtype = jnp.float32
    remat: bool = False  # Recompute each block's forward in the backward pass.
    remat_policy: str = "full"  # What remat keeps: one of REMAT_POLICIES.
    scan: bool = False  # The blocks as one lax.scan (compiles once, not L times).
    head_bias_init: float = 0.0
    gelu: str = "tanh"  # One of GELU_FORMS.
    attention_fn: Callable = dot_product_attention  # See vit_jax.models.attention.
    # Lays out the head's input (batch, features) for the devices of a sharded
    # step; the trainer passes vit_jax.sharding.batch_constraint (see there).
    constrain_batch: Callable | None = None

    def setup_checks(self, images):
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier={self.classifier!r}; choose one of {CLASSIFIERS}.")
        if self.gelu not in GELU_FORMS:
            raise ValueError(f"gelu={self.gelu!r}; choose one of {GELU_FORMS}.")
        if self.posemb not in POSEMB_KINDS:
            raise ValueError(f"posemb={self.posemb!r}; choose one of {POSEMB_KINDS}.")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"remat_policy={self.remat_policy!r}; choose one of {tuple(REMAT_POLICIES)}."
            )
        if images.ndim != 4:
            raise ValueError(f"expected NHWC images, got shape {images.shape}.")

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        tokens, grid = self.embed_patches(images)
        return self.classify(self.encode(tokens, grid, train=train))

    # The three stages below are separate so that variants (masked patch
    # prediction) can change the tokens in between and keep the same tree.

    def embed_patches(self, images):
        """Images → (batch, rows·cols, hidden) patch embeddings and the grid."""
        self.setup_checks(images)
        x = images.astype(self.dtype)
        if self.resnet is not None:
            # Built inline so that its parameters sit at the root of the tree
            # (conv_root, gn_root, block1, ...), as in the official hybrids.
            x = hybrid_stem(x, self.resnet, dtype=self.dtype)
        height, width = x.shape[1:3]
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise ValueError(
                f"input feature map {height}x{width} is not divisible by the patch size "
                f"{ph}x{pw}: resize the images to a multiple of the patch size."
            )
        # A PxP stride-P convolution is the linear projection of flattened patches.
        x = nn.Conv(
            self.hidden_size,
            self.patch_size,
            strides=self.patch_size,
            padding="VALID",
            dtype=self.dtype,
            name="embedding",
        )(x)
        batch, rows, cols, hidden = x.shape
        return x.reshape(batch, rows * cols, hidden), (rows, cols)

    @property
    def has_class_token(self) -> bool:
        return self.classifier == "token"

    def encode(self, tokens, grid, *, train: bool):
        """Prepends the [class] token and runs the encoder: (batch, T, hidden)."""
        if self.has_class_token:
            cls = self.param("cls", nn.initializers.zeros, (1, 1, tokens.shape[-1]))
            cls = jnp.tile(cls.astype(tokens.dtype), (tokens.shape[0], 1, 1))
            tokens = jnp.concatenate([cls, tokens], axis=1)
        return Encoder(
            num_layers=self.num_layers,
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            grid=grid,
            has_class_token=self.has_class_token,
            posemb=self.posemb,
            dtype=self.dtype,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            stochastic_depth=self.stochastic_depth,
            remat=self.remat,
            remat_policy=self.remat_policy,
            scan=self.scan,
            gelu=self.gelu,
            attention_fn=self.attention_fn,
            name="Transformer",
        )(tokens, train=train)

    def classify(self, encoded):
        """y = class token (or mean of the patch tokens), pre-logits, head."""
        x = encoded[:, 0] if self.has_class_token else jnp.mean(encoded, axis=1)
        if self.representation_size:
            x = jnp.tanh(nn.Dense(self.representation_size, name="pre_logits")(x))
        self.sow("intermediates", "representation", x)
        if not self.num_classes:
            return x
        if self.constrain_batch is not None:
            x = self.constrain_batch(x)
        return nn.Dense(
            self.num_classes,
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.constant(self.head_bias_init),
            name="head",
        )(x).astype(jnp.float32)

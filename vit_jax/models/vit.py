"""The Vision Transformer (Dosovitskiy et al., 2021, Sec. 3.1, Eq. 1-4).

The parameter tree is the official vision_transformer repo's linen tree, so
its published .npz checkpoints load unchanged (see vit_jax.checkpoint):

  embedding/{kernel,bias}, cls, Transformer/posembed_input/pos_embedding,
  Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0}, Transformer/encoder_norm, pre_logits, head.

Two collections can be made mutable in `apply` for analysis:
  'attention':     per block, the (B, heads, T, T) attention probabilities;
  'intermediates': the pre-logits representation, for linear probes.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import cpu_attention, mkl_matmul
from vit_jax.models.resnet import ResNetSpec, hybrid_stem

Dtype = Any
LAYER_NORM_EPSILON = 1e-6  # The official code's value; flax's default is 1e-6 too.
POSEMB_KINDS = ("learn_1d", "learn_2d", "relative", "none")
CLASSIFIERS = ("token", "gap")
# "auto": cuDNN's fused kernel where it serves (16-bit on GPU), the fused CPU
# kernel for float32 on a CPU backend of one device (or with
# matmul_impl="mkl"), else the explicit softmax; "explicit", "cudnn" and
# "cpu" ask for one (benchmarks, workarounds). "cpu" is the project's own
# kernel (cpu_attention.py): XLA's softmax path took 1.6-3.3× its time on the
# attention alone, a ViT-B/16 step 1.03-1.10× (docs/performance.md).
ATTENTION_IMPLS = ("auto", "explicit", "cudnn", "cpu")
# The dense layers' matmuls: XLA's, or Intel MKL through a custom call on
# the CPU (float32, one device; mkl_matmul.py says when it is faster).
MATMUL_IMPLS = ("xla", "mkl")

xavier_uniform = nn.initializers.xavier_uniform()
tiny_normal = nn.initializers.normal(stddev=1e-6)  # Official bias init of the MLP.


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
        return x  # 'none', and 'relative' (which biases attention instead).


class RelativePositionBias(nn.Module):
    """A learned per-head attention bias indexed by the 2-D offset of two
    patches (the 'relative' row of Table 8). The class token's interactions
    get three extra learned entries (token→cls, cls→token, cls→cls)."""

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


def _use_cudnn_attention(dtype) -> bool:
    """cuDNN's fused flash attention on GPU for 16-bit compute (jax.nn's
    default implementation is always the XLA path in this JAX version)."""
    return jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)


def _dense_general_kernel_init(fan_in_dims: int):
    """xavier_uniform drawn on the 2-D (fan-in, fan-out) view of a kernel whose
    first `fan_in_dims` axes are its inputs, then reshaped: nn.DenseGeneral's
    convention, so these kernels start from the same values as its own."""

    def init(rng, shape, dtype=jnp.float32):
        flat = (int(np.prod(shape[:fan_in_dims])), int(np.prod(shape[fan_in_dims:])))
        return xavier_uniform(rng, flat, dtype).reshape(shape)

    return init


class HeadProjection(nn.Module):
    """x (B, T, D) → one of q/k/v, (B, heads, T, head_dim) when `head_major`
    else (B, T, heads, head_dim), with nn.DenseGeneral's parameters (kernel
    (D, heads, head_dim), bias (heads, head_dim)) and initialisation.

    Head-major output lets XLA run the attention matmuls as plain batched
    GEMMs without the transposes it puts around (B, T, heads, head_dim)
    operands: a ViT-B/16 gradient step on CPU is ~5% faster."""

    num_heads: int
    head_dim: int
    head_major: bool
    dtype: Dtype = jnp.float32
    matmul_impl: str = "xla"

    @nn.compact
    def __call__(self, x):
        shape = (x.shape[-1], self.num_heads, self.head_dim)
        kernel = self.param("kernel", _dense_general_kernel_init(1), shape)
        bias = self.param("bias", nn.initializers.zeros, shape[1:])
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if mkl_matmul.wanted(self.matmul_impl, self.dtype):
            y = mkl_matmul.matmul(x, kernel.reshape(shape[0], -1)).reshape(*x.shape[:2], *shape[1:])
            y = y + bias
            return y.transpose(0, 2, 1, 3) if self.head_major else y
        if self.head_major:
            return jnp.einsum("btd,dnh->bnth", x, kernel) + bias[:, None, :]
        return jnp.einsum("btd,dnh->btnh", x, kernel) + bias


class HeadMerge(nn.Module):
    """Attention output (B, heads, T, head_dim) or (B, T, heads, head_dim) →
    (B, T, D): nn.DenseGeneral over (heads, head_dim), same parameters."""

    features: int
    head_major: bool
    dtype: Dtype = jnp.float32
    matmul_impl: str = "xla"

    @nn.compact
    def __call__(self, x):
        heads, head_dim = (x.shape[1], x.shape[3]) if self.head_major else x.shape[2:]
        shape = (heads, head_dim, self.features)
        kernel = self.param("kernel", _dense_general_kernel_init(2), shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if mkl_matmul.wanted(self.matmul_impl, self.dtype):
            x = x.transpose(0, 2, 1, 3) if self.head_major else x  # (B, T, heads, head_dim)
            x = x.reshape(*x.shape[:2], heads * head_dim)
            return mkl_matmul.matmul(x, kernel.reshape(heads * head_dim, -1)) + bias
        spec = "bnth,nhd->btd" if self.head_major else "btnh,nhd->btd"
        return jnp.einsum(spec, x, kernel) + bias


class MultiHeadDotProductAttention(nn.Module):
    """Multi-head self-attention with the official q/k/v/out parameter shapes.

    With `attention_impl="auto"`, 16-bit compute on GPU without attention
    dropout, bias or a request for the maps goes through cuDNN's fused flash
    attention (`jax.nn.dot_product_attention`), float32 on a CPU backend of
    one device (or with `matmul_impl="mkl"`) through the fused CPU kernel
    (cpu_attention.py; XLA's path where no C++ compiler can build it);
    everything else computes the softmax explicitly, head-major. "cudnn"
    asks for cuDNN's kernel on any dtype, "cpu" for the CPU kernel whatever
    the dense layers use, "explicit" for neither; none changes the
    parameters.
    """

    num_heads: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    attention_impl: str = "auto"
    matmul_impl: str = "xla"

    @nn.compact
    def __call__(self, x, *, deterministic: bool, bias=None):
        hidden = x.shape[-1]
        if hidden % self.num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {self.num_heads} heads.")
        head_dim = hidden // self.num_heads
        wants_maps = self.is_mutable_collection("attention")
        uses_dropout = not deterministic and self.dropout_rate > 0
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"attention_impl={self.attention_impl!r}; choose one of {ATTENTION_IMPLS}."
            )
        wanted = self.attention_impl == "cudnn" or (
            self.attention_impl == "auto" and _use_cudnn_attention(self.dtype)
        )
        # The fused kernels have no maps to show, and no dropout or bias here.
        plain = not (wants_maps or uses_dropout or bias is not None)
        fused = wanted and plain
        # The CPU kernel reads the projections' (B, T, heads, h) output in
        # place; "auto" takes it for float32 on a lone CPU device.
        asked = self.attention_impl
        if asked == "auto" and (
            self.matmul_impl == "mkl" or cpu_attention.serves_by_default(self.dtype)
        ):
            asked = "cpu"
        on_cpu = plain and not fused and cpu_attention.wanted(asked, self.dtype)
        head_major = not (fused or on_cpu)
        project = lambda name: HeadProjection(  # noqa: E731
            self.num_heads,
            head_dim,
            head_major=head_major,
            dtype=self.dtype,
            matmul_impl=self.matmul_impl,
            name=name,
        )
        query, key, value = project("query")(x), project("key")(x), project("value")(x)
        if fused:
            out = jax.nn.dot_product_attention(query, key, value, implementation="cudnn")
        else:
            # q is scaled (B·N·T·h values) before the product, as flax's
            # attention does, not the logits (B·N·T·T): XLA:CPU otherwise
            # materialises a (B, N, T, T) constant for the scale. Equal bits
            # for head_dim 64 (a power-of-two scale); speed level (A/B).
            query = query / jnp.sqrt(head_dim).astype(self.dtype)
            if on_cpu:
                out = cpu_attention.attention(query, key, value, True)
            else:
                out = self._explicit_softmax(query, key, value, bias, wants_maps, uses_dropout)
        return HeadMerge(
            hidden, head_major, dtype=self.dtype, matmul_impl=self.matmul_impl, name="out"
        )(out)

    def _explicit_softmax(self, query, key, value, bias, wants_maps, uses_dropout):
        logits = jnp.einsum("bnqh,bnkh->bnqk", query, key)
        if bias is not None:
            logits = logits + bias.astype(logits.dtype)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
        if wants_maps:
            self.sow("attention", "weights", weights)
        if uses_dropout:
            weights = nn.Dropout(self.dropout_rate)(weights, deterministic=False)
        return jnp.einsum("bnqk,bnkh->bnqh", weights, value)


def exact_gelu(x):
    """x·Φ(x), Φ the standard normal CDF, as 0.5·x·(1 + erf(x/√2)) (timm's form).

    jax.nn.gelu(approximate=False) evaluates Φ through erfc(-x/√2), which
    XLA:CPU computes about 4× slower than erf (5.4 against 1.4 ms on a
    1576 × 3072 activation: ≈ 4% of a ViT-B/16 forward). The two agree to
    float32 rounding (max 1.1e-6 from the float64 value over [-12, 12], as
    PyTorch's own float32 GELU); erfc only gains relative accuracy in the
    far negative tail, where GELU is ≈ 0 anyway. 16-bit inputs are evaluated
    in float32, where 1 + erf does not lose the tail to rounding.
    """
    compute = jnp.promote_types(x.dtype, jnp.float32)
    y = x.astype(compute)
    return (0.5 * y * (1.0 + jax.lax.erf(y * np.sqrt(0.5).astype(compute)))).astype(x.dtype)


class MlpBlock(nn.Module):
    """Dense(mlp_dim) → GELU → Dense(D), dropout after each Dense."""

    mlp_dim: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    matmul_impl: str = "xla"

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        mkl = mkl_matmul.wanted(self.matmul_impl, self.dtype)
        dense = lambda features: nn.Dense(  # noqa: E731
            features,
            dtype=self.dtype,
            kernel_init=xavier_uniform,
            bias_init=tiny_normal,
            dot_general=mkl_matmul.dot_general if mkl else None,
        )
        y = exact_gelu(dense(self.mlp_dim)(x))
        y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        y = dense(x.shape[-1])(y)
        return nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)


class Encoder1DBlock(nn.Module):
    """One pre-norm block: z' = MSA(LN(z)) + z ; z = MLP(LN(z')) + z' (Eq. 2-3)."""

    mlp_dim: int
    num_heads: int
    dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    attention_impl: str = "auto"
    matmul_impl: str = "xla"

    @nn.compact
    def __call__(self, x, deterministic: bool, attention_bias=None):
        # Stochastic depth drops a whole residual branch per example.
        drop_path = lambda y: nn.Dropout(  # noqa: E731
            self.drop_path_rate, broadcast_dims=tuple(range(1, y.ndim))
        )(y, deterministic=deterministic)
        y = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype, name="LayerNorm_0")(x)
        y = MultiHeadDotProductAttention(
            self.num_heads,
            dtype=self.dtype,
            dropout_rate=self.attention_dropout_rate,
            attention_impl=self.attention_impl,
            matmul_impl=self.matmul_impl,
            name="MultiHeadDotProductAttention_0",
        )(y, deterministic=deterministic, bias=attention_bias)
        y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        x = x + drop_path(y)
        y = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype, name="LayerNorm_1")(x)
        y = MlpBlock(
            self.mlp_dim,
            dtype=self.dtype,
            dropout_rate=self.dropout_rate,
            matmul_impl=self.matmul_impl,
            name="MlpBlock_0",
        )(y, deterministic=deterministic)
        return x + drop_path(y)


class Encoder(nn.Module):
    """Position embeddings, dropout, L encoder blocks and the final LayerNorm."""

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
    attention_impl: str = "auto"
    matmul_impl: str = "xla"

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = AddPositionEmbs(self.posemb, self.grid, self.has_class_token, name="posembed_input")(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        # `deterministic` is a Python bool, static for remat (argument 2 incl. self).
        block_cls = nn.remat(Encoder1DBlock, static_argnums=(2,)) if self.remat else Encoder1DBlock
        for i in range(self.num_layers):
            bias = None
            if self.posemb == "relative":
                bias = RelativePositionBias(
                    self.grid, self.num_heads, self.has_class_token, name=f"relpos_{i}"
                )()[None]
            x = block_cls(
                mlp_dim=self.mlp_dim,
                num_heads=self.num_heads,
                dtype=self.dtype,
                dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                # Linear in depth, as timm and big_vision do; 0 is the paper.
                drop_path_rate=self.stochastic_depth * i / max(self.num_layers - 1, 1),
                attention_impl=self.attention_impl,
                matmul_impl=self.matmul_impl,
                name=f"encoderblock_{i}",
            )(x, not train, bias)
        return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name="encoder_norm")(x)


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
    remat: bool = False
    head_bias_init: float = 0.0
    attention_impl: str = "auto"  # One of ATTENTION_IMPLS.
    matmul_impl: str = "xla"  # One of MATMUL_IMPLS.

    def setup_checks(self, images):
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier={self.classifier!r}; choose one of {CLASSIFIERS}.")
        if self.matmul_impl not in MATMUL_IMPLS:
            raise ValueError(f"matmul_impl={self.matmul_impl!r}; choose one of {MATMUL_IMPLS}.")
        if self.posemb not in POSEMB_KINDS:
            raise ValueError(f"posemb={self.posemb!r}; choose one of {POSEMB_KINDS}.")
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
            attention_impl=self.attention_impl,
            matmul_impl=self.matmul_impl,
            name="Transformer",
        )(tokens, train=train)

    def classify(self, encoded):
        """y = class token (or mean of the patch tokens), pre-logits, head."""
        x = encoded[:, 0] if self.has_class_token else jnp.mean(encoded, axis=1)
        if self.representation_size:
            x = jnp.tanh(nn.Dense(self.representation_size, name="pre_logits")(x))
        self.sow("intermediates", "pre_logits", x)
        if not self.num_classes:
            return x
        return nn.Dense(
            self.num_classes,
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.constant(self.head_bias_init),
            name="head",
        )(x).astype(jnp.float32)

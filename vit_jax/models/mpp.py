"""Self-supervised masked patch prediction (Sec. 4.6, App. B.1.2).

50% of the patch embeddings are corrupted — of those 80% are replaced by a
learnable [mask] embedding, 10% by another random patch embedding of the
same image, 10% kept — and the model predicts each corrupted patch's 3-bit
mean colour (8 levels per channel: 512 classes for RGB) from its encoder
output. The encoder tree is the ViT's, so a fine-tuning run loads it with
`load_pretrained` (the extra `mask_token` and `mpp_head` are left behind).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax.models.vit import VisionTransformer

CORRUPT_FRACTION = 0.5
MASK_TOKEN, RANDOM_PATCH, KEEP = 0.8, 0.1, 0.1
COLOUR_BITS = 3


def mean_colour_targets(images, patch_size, bits: int = COLOUR_BITS):
    """Class index of each patch's mean colour, quantised to `bits` per channel.

    images: (B, H, W, C) in [-1, 1] → (B, rows·cols) ints in [0, (2^bits)^C).
    """
    batch, height, width, channels = images.shape
    ph, pw = patch_size
    patches = images.reshape(batch, height // ph, ph, width // pw, pw, channels)
    mean = patches.mean(axis=(2, 4)).reshape(batch, -1, channels)
    levels = 2**bits
    quantised = jnp.clip(jnp.floor((mean + 1) / 2 * levels), 0, levels - 1).astype(jnp.int32)
    weights = levels ** jnp.arange(channels - 1, -1, -1)  # R is the most significant digit.
    return jnp.sum(quantised * weights, axis=-1)


def sample_corruption(rng, batch: int, num_patches: int):
    """Which patches are corrupted, and how.

    Returns (corrupted, replace_with_mask, replace_with_random, source) where the
    first three are (B, N) booleans and `source` (B, N) the index of the patch
    whose embedding replaces a 'random' one. Exactly round(50% · N) patches per
    image are corrupted; each picks mask/random/keep with probability 80/10/10.
    """
    pick_rng, kind_rng, source_rng = jax.random.split(rng, 3)
    num_corrupted = round(CORRUPT_FRACTION * num_patches)
    scores = jax.random.uniform(pick_rng, (batch, num_patches))
    ranks = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
    corrupted = ranks < num_corrupted
    kind = jax.random.uniform(kind_rng, (batch, num_patches))
    with_mask = corrupted & (kind < MASK_TOKEN)
    with_random = corrupted & (kind >= MASK_TOKEN) & (kind < MASK_TOKEN + RANDOM_PATCH)
    # A different patch of the same image: shift by 1..N-1 positions.
    shift = jax.random.randint(source_rng, (batch, num_patches), 1, max(num_patches, 2))
    source = (jnp.arange(num_patches)[None, :] + shift) % num_patches
    return corrupted, with_mask, with_random, source


class MaskedPatchPredictor(VisionTransformer):
    """A ViT trained to predict the mean colour of corrupted patches.

    `__call__` returns (logits (B, N, classes), targets (B, N), corrupted (B, N));
    `num_classes` is unused (the colour classes come from the image channels).
    The corruption is drawn from the 'mpp' RNG stream.
    """

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        if self.resnet is not None:
            raise ValueError(
                "Masked patch prediction needs pixel patches: use a plain ViT, not a hybrid."
            )
        tokens, grid = self.embed_patches(images)
        batch, num_patches, hidden = tokens.shape
        corrupted, with_mask, with_random, source = sample_corruption(
            self.make_rng("mpp"), batch, num_patches
        )
        mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, hidden))
        shuffled = jnp.take_along_axis(tokens, source[..., None], axis=1)
        tokens = jnp.where(with_random[..., None], shuffled, tokens)
        tokens = jnp.where(with_mask[..., None], mask_token.astype(tokens.dtype), tokens)
        encoded = self.encode(tokens, grid, train=train)
        patch_outputs = encoded[:, 1:] if self.has_class_token else encoded
        num_colours = (2**COLOUR_BITS) ** images.shape[-1]
        logits = nn.Dense(num_colours, kernel_init=nn.initializers.zeros, name="mpp_head")(
            patch_outputs
        ).astype(jnp.float32)
        # Targets come from the uncorrupted input pixels.
        targets = mean_colour_targets(images.astype(jnp.float32), self.patch_size)
        return logits, targets, corrupted


def masked_patch_loss(logits, targets, corrupted):
    """Mean softmax cross-entropy over the corrupted patches only."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    weights = corrupted.astype(losses.dtype)
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)

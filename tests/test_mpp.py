"""Masked patch prediction (Sec. 4.6): corruption proportions, colour targets, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vit_jax.models import get_masked_patch_model, get_model
from vit_jax.models.mpp import masked_patch_loss, mean_colour_targets, sample_corruption


def test_corruption_proportions_over_many_draws():
    corrupted, with_mask, with_random, source = sample_corruption(jax.random.key(0), 4000, 16)
    # Exactly half of each image's patches are corrupted.
    np.testing.assert_array_equal(corrupted.sum(axis=1), 8)
    num = corrupted.sum()
    assert abs(with_mask.sum() / num - 0.8) < 0.01
    assert abs(with_random.sum() / num - 0.1) < 0.01
    kept = corrupted & ~with_mask & ~with_random
    assert abs(kept.sum() / num - 0.1) < 0.01
    assert not np.any(with_mask & ~corrupted) and not np.any(with_random & ~corrupted)
    # A 'random' replacement never copies the patch onto itself.
    assert not np.any(source == np.arange(16)[None, :])


def test_three_bit_colour_targets_on_a_known_image():
    # 2x2 patches of 4x4 px: pure red, pure green, mid grey, black.
    image = -np.ones((1, 8, 8, 3), np.float32)
    image[0, :4, :4] = [1, -1, -1]
    image[0, :4, 4:] = [-1, 1, -1]
    image[0, 4:, :4] = 0.0  # Mean 0.5 in [0, 1] → level 4 of 0..7.
    targets = mean_colour_targets(jnp.asarray(image), (4, 4))
    red, green, grey, black = 7 * 64, 7 * 8, 4 * 64 + 4 * 8 + 4, 0
    np.testing.assert_array_equal(targets, [[red, green, grey, black]])
    assert int(mean_colour_targets(jnp.ones((1, 4, 4, 3)), (4, 4)).max()) == 511


def test_corrupted_tokens_follow_the_sampled_plan():
    model = get_masked_patch_model("testing")
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
    variables = model.init({"params": jax.random.key(1), "mpp": jax.random.key(2)}, images)
    logits, targets, corrupted = model.apply(variables, images, rngs={"mpp": jax.random.key(3)})
    assert logits.shape == (2, 16, 512) and targets.shape == (2, 16)
    np.testing.assert_array_equal(corrupted.sum(axis=1), 8)
    # Its encoder tree is the classifier's, plus the mask token and colour head.
    classifier = get_model("testing", num_classes=10).init(jax.random.key(0), images)["params"]
    extra = set(variables["params"]) - set(classifier)
    assert extra == {"mask_token", "mpp_head"}
    assert set(classifier) - set(variables["params"]) == {"head"}


def test_a_few_steps_lower_the_loss():
    model = get_masked_patch_model("testing")
    rng = np.random.default_rng(0)
    # Images of smooth colour blobs: the colour of a patch is predictable from its neighbours.
    base = rng.uniform(-1, 1, (16, 2, 2, 3)).astype(np.float32)
    images = jnp.asarray(np.repeat(np.repeat(base, 8, axis=1), 8, axis=2))
    params = model.init({"params": jax.random.key(0), "mpp": jax.random.key(0)}, images)["params"]
    optimizer = optax.adam(3e-3)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, key):
        def loss_fn(p):
            return masked_patch_loss(*model.apply({"params": p}, images, rngs={"mpp": key}))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for i in range(30):
        params, state, loss = step(params, state, jax.random.key(100 + i))
        losses.append(float(loss))
    # From ln(512) ≈ 6.2 nats at the start, at least one nat is learned.
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 1.0


def test_hybrids_are_refused():
    with pytest.raises(ValueError, match="plain ViT"):
        get_masked_patch_model("R50+ViT-B_16")

"""The official code's formulation (vit_jax/official_vit.py), the baseline of
`bench --compare=official`: the same parameter tree as vit_jax's model, and
the same outputs on the same parameters, so the benchmark compares two ways
of computing one model."""

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from vit_jax.models import get_model
from vit_jax.official_vit import get_official_model

IMAGES = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1)


def perturbed_params(model):
    """Freshly initialised parameters moved off their init (a zero head and
    zero class token would hide differences)."""
    params = model.init(jax.random.key(0), IMAGES)["params"]
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    noise = [0.02 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, [x + n for x, n in zip(leaves, noise, strict=True)])


def shapes(params):
    return {path: x.shape for path, x in flatten_dict(params).items()}


def test_same_parameter_tree_as_ours():
    ours = get_model("ViT-Ti_16", 10).init(jax.random.key(0), IMAGES)["params"]
    official = get_official_model("ViT-Ti_16", 10).init(jax.random.key(0), IMAGES)["params"]
    assert shapes(official) == shapes(ours)


@pytest.mark.parametrize("attention_impl", ["explicit", "cpu"])
def test_same_outputs_as_ours_on_the_same_parameters(attention_impl):
    ours = get_model("ViT-Ti_16", 10, attention_impl=attention_impl)
    params = perturbed_params(ours)
    logits = ours.apply({"params": params}, IMAGES)
    # With the exact GELU the two differ only by float32 rounding...
    exact = get_official_model("ViT-Ti_16", 10, approximate_gelu=False)
    np.testing.assert_allclose(exact.apply({"params": params}, IMAGES), logits, atol=2e-6)
    # ...with flax's default (the tanh form the official code calls) by its error.
    official = get_official_model("ViT-Ti_16", 10).apply({"params": params}, IMAGES)
    difference = float(np.abs(official - logits).max())
    assert 1e-6 < difference < 1e-3 * float(np.abs(logits).max())


def test_train_mode_applies_dropout():
    official = get_official_model("testing", 10, dropout_rate=0.5)
    params = perturbed_params(official)
    rngs = {"dropout": jax.random.key(3)}
    train = official.apply({"params": params}, IMAGES, train=True, rngs=rngs)
    assert not np.allclose(train, official.apply({"params": params}, IMAGES))


def test_rejects_models_it_does_not_cover():
    with pytest.raises(ValueError, match="plain ViTs.*R50\\+ViT-B_16 sets resnet"):
        get_official_model("R50+ViT-B_16", 10)

"""The official code's formulation (experiments/bench/official_vit.py), the
baseline of `bench --compare=official`: the same parameter tree as vit_jax's
model, and the same outputs on the same parameters (with the official GELU,
vit_jax's default), so the benchmark compares two ways of computing one model."""

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from experiments.bench.official_vit import get_official_model
from vit_jax.kernels import cpu_attention
from vit_jax.models import get_model
from vit_jax.models.attention import dot_product_attention

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


@pytest.mark.parametrize(
    "attention_fn", [dot_product_attention, cpu_attention.attention_fn], ids=["xla", "cpu"]
)
def test_same_outputs_as_ours_on_the_same_parameters(attention_fn):
    ours = get_model("ViT-Ti_16", 10, attention_fn=attention_fn)
    params = perturbed_params(ours)
    logits = ours.apply({"params": params}, IMAGES)
    scale = float(np.abs(logits).max())
    # vit_jax's default GELU is the official tanh form: float32 rounding apart.
    official = get_official_model("ViT-Ti_16", 10).apply({"params": params}, IMAGES)
    np.testing.assert_allclose(official, logits, rtol=0, atol=1e-5 * scale)
    # The exact form (timm's) on both sides agrees the same way.
    exact = get_model("ViT-Ti_16", 10, gelu="exact", attention_fn=attention_fn)
    official_exact = get_official_model("ViT-Ti_16", 10, approximate_gelu=False)
    np.testing.assert_allclose(
        official_exact.apply({"params": params}, IMAGES),
        exact.apply({"params": params}, IMAGES),
        rtol=0,
        atol=1e-5 * scale,
    )


def test_train_mode_applies_dropout():
    official = get_official_model("testing", 10, dropout_rate=0.5)
    params = perturbed_params(official)
    rngs = {"dropout": jax.random.key(3)}
    train = official.apply({"params": params}, IMAGES, train=True, rngs=rngs)
    assert not np.allclose(train, official.apply({"params": params}, IMAGES))


def test_rejects_models_it_does_not_cover():
    with pytest.raises(ValueError, match="plain ViTs.*R50\\+ViT-B_16 sets resnet"):
        get_official_model("R50+ViT-B_16", 10)

"""AugReg file names (vit_jax.convert.augreg): the recipe read from the name,
and a file with the official layout loaded by its name alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import checkpoint, infer
from vit_jax.convert import augreg
from vit_jax.models import get_model

FINE_TUNED = (
    "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"
    "--imagenet2012-steps_20k-lr_0.01-res_384.npz"
)


def test_a_fine_tuned_name_gives_the_model_and_both_recipes():
    facts = augreg.parse_name(f"gs://vit_models/augreg/{FINE_TUNED}")
    assert facts == augreg.AugRegName(
        model="ViT-B_16",
        dataset="i21k",
        epochs=300,
        lr=0.001,
        augmentation="medium1",
        weight_decay=0.1,
        dropout=0.0,
        stochastic_depth=0.0,
        fine_tuning=augreg.FineTuning("imagenet2012", "20k", 0.01, 384),
    )
    assert facts.registered_model == "ViT-B_16" and facts.resolution == 384
    assert facts.describe() == (
        "ViT-B_16 pre-trained on ImageNet-21k for 300 epochs (lr 0.001, weight decay 0.1, "
        "augmentation medium1, dropout 0.0, stochastic depth 0.0) at 224 px; fine-tuned on "
        "imagenet2012 for 20k steps (lr 0.01) at 384 px."
    )


@pytest.mark.parametrize(
    "name, model, registered",
    [
        ("Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "ViT-Ti_16", True),
        ("S_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0", "ViT-S_32", True),
        ("R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1", "R50+ViT-L_32", True),
        ("R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0", "R26+ViT-S_32", False),
        ("R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "R+ViT-Ti_16", False),
    ],
)
def test_pre_trained_names_and_the_model_spellings_of_the_index(name, model, registered):
    facts = augreg.parse_name(name + ".npz")
    assert facts.model == model and facts.fine_tuning is None and facts.resolution == 224
    assert facts.registered_model == (model if registered else None)


@pytest.mark.parametrize(
    "name",
    [
        "ViT-B_16.npz",
        "imagenet21k_R50+ViT-B_16.npz",
        "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012.npz",
    ],
)
def test_other_names_are_not_augreg_names(name):
    assert augreg.parse_name(name) is None


def test_an_augreg_named_file_is_loaded_by_its_name_alone_and_its_facts_printed(tmp_path, capsys):
    name = (
        "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"
        "--oxford_iiit_pet-steps_0k-lr_0.003-res_64.npz"
    )
    model = get_model("ViT-Ti_16", num_classes=37)
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: rng.normal(0, 0.05, x.shape).astype(np.float32), shapes)
    checkpoint.save_npz(tmp_path / name, params)  # The published layout, under that name.

    loaded_params, loaded = infer.load_model(str(tmp_path / name))
    printed = capsys.readouterr().out
    assert "ViT-Ti_16 pre-trained on ImageNet-21k for 300 epochs" in printed
    assert "fine-tuned on oxford_iiit_pet for 0k steps (lr 0.003) at 64 px" in printed
    assert loaded.image_size == (64, 64) and loaded.module.num_classes == 37
    assert (loaded.module.hidden_size, loaded.module.num_heads) == (192, 3)
    pixels = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        loaded.module.apply({"params": loaded_params}, pixels, train=False),
        model.apply({"params": params}, pixels, train=False),
    )

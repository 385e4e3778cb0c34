"""`python -m vit_jax.infer` on a saved checkpoint and a real photo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image

from vit_jax import infer
from vit_jax.checkpoint import save_npz
from vit_jax.errors import UserError
from vit_jax.models import get_model


def _init(model, size, channels=3, seed=0):
    """N(0, 0.5) weights drawn with numpy into the model's shapes: compiling
    `model.init` would take most of this file's time on a CPU."""
    images = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: rng.normal(0, 0.5, leaf.shape).astype(np.float32), shapes)


def _param_shapes(model, size):
    """Parameter shapes without computing them: reading a config needs no values."""
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    return jax.tree.map(lambda leaf: leaf.shape, params)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    return str(path)


def test_imagenet_class_names_are_the_standard_order():
    names = infer.imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) > 990  # 'crane' and 'maillot' repeat.
    assert names[0].startswith("tench") and names[285].startswith("Egyptian cat")
    assert names[999].startswith("toilet tissue")


@pytest.mark.parametrize(
    "name, overrides, size",
    [
        ("testing", {}, 16),
        ("testing", dict(classifier="gap", posemb="learn_2d", representation_size=8), 24),
        ("testing", dict(posemb="relative"), 16),
        ("testing-hybrid", {}, 32),
    ],
)
def test_architecture_and_resolution_are_read_from_the_parameters(name, overrides, size):
    model = get_model(name, num_classes=7, **overrides)
    shapes = _param_shapes(model, size)
    as_arrays = jax.tree.map(np.zeros, shapes, is_leaf=lambda x: isinstance(x, tuple))
    loaded = infer.model_from_params(as_arrays)
    assert loaded.image_size == (size, size)
    assert loaded.channels == 3
    assert _param_shapes(loaded.module, size) == shapes
    for field in ("classifier", "posemb", "representation_size", "num_heads", "mlp_dim"):
        assert getattr(loaded.module, field) == getattr(model, field), field


def test_a_wrong_model_name_is_reported_with_the_mismatching_parameter():
    params = _init(get_model("testing", num_classes=3), 16)
    with pytest.raises(
        ValueError,
        match="does not fit --model=ViT-Ti_16: Transformer/encoder_norm/bias is \\(16,\\)",
    ):
        infer.model_from_params(params, "ViT-Ti_16")


def test_infer_prints_top5_that_agree_with_model_apply(tmp_path, photo, capsys):
    model = get_model("testing", num_classes=1000)
    params = _init(model, 16)
    checkpoint = tmp_path / "testing.npz"
    save_npz(checkpoint, params)

    results = infer.main([f"--checkpoint={checkpoint}", photo])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{photo}:" and len(printed) == 6
    (top,) = results
    probabilities = np.array([p for _, _, p in top])
    assert len(top) == 5 and probabilities.sum() <= 1.0
    assert np.all(np.diff(probabilities) <= 0)

    image = infer.load_image(photo, (16, 16))
    assert image.shape == (16, 16, 3) and -1 <= image.min() < image.max() <= 1
    expected = jax.nn.softmax(model.apply({"params": params}, image[None], train=False)[0])
    expected_top = np.argsort(-np.asarray(expected))[:5]
    assert [i for i, _, _ in top] == list(expected_top)
    np.testing.assert_allclose(probabilities, np.asarray(expected)[expected_top], rtol=1e-5)
    names = infer.imagenet_class_names()
    for line, (index, name, _) in zip(printed[1:], top, strict=True):
        assert name == names[index] and line.endswith(f"{index:5d}  {name}")


def test_infer_reads_grey_scale_checkpoints_and_custom_labels(tmp_path, photo, capsys):
    params = _init(get_model("testing", num_classes=3), 8, channels=1)
    checkpoint = tmp_path / "digits.npz"
    save_npz(checkpoint, params)
    labels = tmp_path / "labels.txt"
    labels.write_text("zero\none\ntwo\n")
    (top,) = infer.main([f"--checkpoint={checkpoint}", f"--labels={labels}", photo])
    assert sorted(name for _, name, _ in top) == ["one", "two", "zero"]
    np.testing.assert_allclose(sum(p for _, _, p in top), 1.0, rtol=1e-5)


def test_bit_checkpoints_need_the_model_name_and_a_resolution(tmp_path, photo):
    shapes = _param_shapes(get_model("BiT-testing", num_classes=4), 32)
    params = jax.tree.map(np.zeros, shapes, is_leaf=lambda x: isinstance(x, tuple))
    with pytest.raises(ValueError, match="pass --model=NAME"):
        infer.model_from_params(params)
    loaded = infer.model_from_params(params, "BiT-testing")
    assert loaded.module.num_classes == 4 and loaded.image_size is None
    checkpoint = tmp_path / "bit.npz"
    save_npz(checkpoint, params)
    with pytest.raises(UserError, match="pass --resolution"):
        infer.main([f"--checkpoint={checkpoint}", "--model=BiT-testing", photo])
    (top,) = infer.main(
        [f"--checkpoint={checkpoint}", "--model=BiT-testing", "--resolution=32", photo]
    )
    np.testing.assert_allclose([p for _, _, p in top], 0.25, rtol=1e-5)  # A zero head: uniform.

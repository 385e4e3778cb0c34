"""`python -m vit_jax.analysis` on saved checkpoints and scikit-image's sample photos."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vit_jax.analysis.__main__ import main
from vit_jax.checkpoint import save_npz
from vit_jax.errors import UserError
from vit_jax.models import get_model


def _checkpoint(tmp_path, size, name="testing", **overrides):
    """A saved 'testing' model with N(0, 0.5) weights. Drawn with numpy into
    the model's shapes: compiling `model.init` would dominate this file's time."""
    model = get_model(name, num_classes=10, **overrides)
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: rng.normal(0, 0.5, leaf.shape).astype(np.float32), shapes)
    path = tmp_path / f"{name}.npz"
    save_npz(path, params)
    return str(path)


def _assert_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 0  # Something was drawn.


def test_every_command_writes_figures_and_numbers(tmp_path):
    checkpoint = _checkpoint(tmp_path, size=32)  # 8x8 grid of 4-pixel patches.
    out_dir = tmp_path / "figures"
    written = main(["all", f"--checkpoint={checkpoint}", f"--out_dir={out_dir}"])
    names = sorted(p.rsplit("/", 1)[1] for p in written)
    assert names == sorted(
        f"{stem}.{ext}"
        for stem in ("rollout", "attention_distance", "posemb_similarity", "filters")
        for ext in ("png", "npz")
    )
    for path in written:
        if path.endswith(".png"):
            _assert_png(path)
    rollout = np.load(out_dir / "rollout.npz")
    assert rollout["relevance"].shape == (4, 8, 8)  # four sample photos
    np.testing.assert_allclose(rollout["relevance"].sum(axis=(1, 2)), 1.0, rtol=1e-6)
    distance = np.load(out_dir / "attention_distance.npz")
    assert distance["distance"].shape == (2, 2) and float(distance["patch_pixels"]) == 4
    # Mean distance on an 8x8 grid of 4-pixel patches is at most the diagonal.
    assert np.all((distance["distance"] > 0) & (distance["distance"] < 4 * 7 * np.sqrt(2)))
    # The uniform baseline of the same 8x8 grid: the mean pairwise patch distance.
    assert 4 * 2 < float(distance["uniform_distance"]) < 4 * 7
    assert np.load(out_dir / "posemb_similarity.npz")["similarity"].shape == (8, 8, 8, 8)
    filters = np.load(out_dir / "filters.npz")
    assert filters["components"].shape == (16, 4, 4, 3)  # 16 filters: 16 components at most.


def test_rollout_on_given_image_files_of_a_gap_model(tmp_path):
    checkpoint = _checkpoint(tmp_path, size=16, classifier="gap", posemb="learn_2d")
    photo = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(photo)
    out_dir = tmp_path / "out"
    main(["rollout", f"--checkpoint={checkpoint}", f"--out_dir={out_dir}", str(photo)])
    _assert_png(out_dir / "rollout.png")
    assert np.load(out_dir / "rollout.npz")["relevance"].shape == (1, 4, 4)
    main(["posemb", f"--checkpoint={checkpoint}", f"--out_dir={out_dir}"])
    _assert_png(out_dir / "posemb_similarity.png")


def test_posemb_of_a_model_without_position_table_names_the_problem(tmp_path):
    checkpoint = _checkpoint(tmp_path, size=16, posemb="none")
    with pytest.raises(UserError, match="no learned absolute position embeddings"):
        main(["posemb", f"--checkpoint={checkpoint}", "--resolution=16", f"--out_dir={tmp_path}"])
    with pytest.raises(UserError, match="hybrids embed ResNet features"):
        main(
            [
                "filters",
                f"--checkpoint={_checkpoint(tmp_path, 32, 'testing-hybrid')}",
                f"--out_dir={tmp_path}",
            ]
        )
    with pytest.raises(UserError, match="pass --resolution"):
        main(["posemb", f"--checkpoint={checkpoint}", f"--out_dir={tmp_path}"])

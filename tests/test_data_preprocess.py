"""Preprocessing ops against reference results on scikit-image's sample photos."""

import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from vit_jax.data import preprocess as pp
from vit_jax.data import vtab

ASTRONAUT = skimage.data.astronaut()  # (512, 512, 3) uint8
CHELSEA = skimage.data.chelsea()  # (300, 451, 3) uint8
CAMERA = skimage.data.camera()  # (512, 512) uint8, grayscale


def run(spec: str, image: np.ndarray, seed=(0, 0), **extra) -> dict:
    example = {"image": tf.constant(image), "_seed": tf.constant(seed, tf.int64), **extra}
    return {k: v.numpy() for k, v in pp.build(spec)(example).items()}


def test_resize_by_half_is_the_2x2_block_mean():
    out = run("resize(256)", ASTRONAUT)["image"]
    blocks = ASTRONAUT.reshape(256, 2, 256, 2, 3).astype(np.float32).mean(axis=(1, 3))
    np.testing.assert_allclose(out, blocks, atol=1e-3)


def test_resize_small_keeps_the_aspect_ratio():
    assert run("resize_small(150)", CHELSEA)["image"].shape == (150, 226, 3)
    assert run("resize(40, 60)", CHELSEA)["image"].shape == (40, 60, 3)


def test_central_crop_is_the_centred_slice():
    out = run("central_crop(100, 200)", CHELSEA)["image"]
    np.testing.assert_array_equal(out, CHELSEA[100:200, 125:325])


def test_random_crop_is_a_slice_of_the_photo():
    out = run("random_crop(64)", ASTRONAUT, seed=(3, 4))["image"]
    # Where the crop's first row occurs in the photo, then the whole crop must match there.
    windows = np.lib.stride_tricks.sliding_window_view(ASTRONAUT, (64, 3), axis=(1, 2))
    rows, cols = np.nonzero((windows[..., 0, :, :] == out[0]).all(axis=(-2, -1)))
    assert any(
        np.array_equal(ASTRONAUT[t : t + 64, c : c + 64], out)
        for t, c in zip(rows, cols, strict=True)
    )


def test_pad_then_random_crop_is_a_shift_of_the_image_with_a_zero_border():
    padded = run("pad(4)", CAMERA[:64, :48, None])["image"]
    reference = np.zeros((72, 56, 1), np.uint8)
    reference[4:68, 4:52] = CAMERA[:64, :48, None]
    np.testing.assert_array_equal(padded, reference)
    # Together: a window of the padded image, so a shift of at most 4 px each way.
    crop = run("pad(4)|random_crop(64, 48)", CAMERA[:64, :48, None], seed=(5, 6))["image"]
    windows = np.lib.stride_tricks.sliding_window_view(reference, (64, 48, 1))[..., 0, :, :, :]
    assert any(np.array_equal(crop, w) for w in windows.reshape(-1, 64, 48, 1))


def test_value_range_maps_0_255_to_minus_one_one():
    out = run("value_range(-1, 1)", ASTRONAUT)["image"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ASTRONAUT / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_allclose(
        run("value_range(0, 1)", ASTRONAUT)["image"], ASTRONAUT / 255.0, atol=1e-6
    )


def test_flip_lr_mirrors_or_keeps_and_depends_only_on_the_seed():
    flips = []
    for seed in range(16):
        out = run("flip_lr", CHELSEA, seed=(seed, 1))["image"]
        flipped = np.array_equal(out, CHELSEA[:, ::-1])
        assert flipped or np.array_equal(out, CHELSEA)
        assert np.array_equal(out, run("flip_lr", CHELSEA, seed=(seed, 1))["image"])
        flips.append(flipped)
    assert 0 < sum(flips) < 16


def test_inception_crop_takes_5_to_100_percent_with_bounded_aspect():
    # Each pixel stores its own (row, column), so the crop tells where it came from.
    rows, cols = np.meshgrid(np.arange(200), np.arange(200), indexing="ij")
    coords = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
    for seed in range(10):
        out = run("inception_crop", coords, seed=(seed, 0))["image"]
        h, w, _ = out.shape
        top, left = out[0, 0, :2]
        np.testing.assert_array_equal(out, coords[top : top + h, left : left + w])
        assert 0.05 * 200 * 200 * 0.9 <= h * w <= 200 * 200
        assert 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.25
    assert run("inception_crop(32)", ASTRONAUT)["image"].shape == (32, 32, 3)


def test_decode_gray_to_rgb_and_channel_handling():
    png = tf.io.encode_png(ASTRONAUT).numpy()
    np.testing.assert_array_equal(run("decode", png)["image"], ASTRONAUT)
    gray = CAMERA[..., None]
    out = run("gray_to_rgb", gray)["image"]
    assert out.shape == (512, 512, 3) and all(np.array_equal(out[..., c], CAMERA) for c in range(3))
    np.testing.assert_array_equal(run("decode|gray_to_rgb", ASTRONAUT)["image"], ASTRONAUT)


def test_onehot_smoothing_and_multi_hot():
    out = run("onehot(4)", ASTRONAUT, label=tf.constant(2, tf.int64))["labels"]
    np.testing.assert_array_equal(out, [0, 0, 1, 0])
    out = run("onehot(4, smoothing=0.2)", ASTRONAUT, label=tf.constant(1, tf.int64))["labels"]
    np.testing.assert_allclose(out, [0.05, 0.85, 0.05, 0.05])
    multi = run("onehot(5)", ASTRONAUT, label=tf.constant([1, 3], tf.int64))["labels"]
    np.testing.assert_array_equal(multi, [0, 1, 0, 1, 0])
    none = run("onehot(5)", ASTRONAUT, label=tf.zeros([0], tf.int64))["labels"]
    np.testing.assert_array_equal(none, np.zeros(5))


@pytest.mark.parametrize("name", sorted(pp.RECIPES))
def test_paper_recipes_produce_square_images_in_minus_one_one(name):
    out = run(pp.recipe(name, 64), CHELSEA)["image"]
    assert out.shape == (64, 64, 3)
    assert -1.0 <= out.min() < out.max() <= 1.0


def test_recipe_strings_spell_the_paper_settings():
    assert pp.recipe("finetune") == "decode|inception_crop(384)|flip_lr|value_range(-1, 1)"
    assert pp.recipe("pretrain_eval") == (
        "decode|resize_small(256)|central_crop(224)|value_range(-1, 1)"
    )


@pytest.mark.parametrize(
    "task",
    [
        "clevr_count",
        "clevr_distance",
        "dmlab",
        "kitti_distance",
        "smallnorb_elevation",
        "dsprites_location",
        "dsprites_orientation",
        "smallnorb_azimuth",
        "svhn",
        "dtd",
    ],
)
def test_vtab_training_keeps_what_the_label_reads(task):
    # Over 12 seeds the training preprocessing of `task` gives only the whole
    # photo (resized), or its mirror where a flip keeps the label; a crop shows
    # as anything else, and must occur only where crops keep the label.
    spec = pp.recipe(vtab.train_recipe(task), 32)
    whole = run("decode|resize(32)|value_range(-1, 1)", CHELSEA)["image"]
    seen = set()
    for seed in range(12):
        out = run(spec, CHELSEA, seed=(seed, 7))["image"]
        if np.allclose(out, whole, atol=1e-5):
            seen.add("whole")
        elif np.allclose(out, whole[:, ::-1], atol=1e-5):
            seen.add("mirror")
        else:
            seen.add("crop")
    flips = task not in vtab.FLIP_CHANGES_LABEL
    if task in vtab.CROP_CHANGES_LABEL:
        assert seen == ({"whole", "mirror"} if flips else {"whole"})
    else:  # Crops (of an aspect the photo does not have): a flip is seen only in the string.
        assert seen == {"crop"} and ("flip_lr" in spec) == flips


def test_bad_strings_name_the_problem():
    with pytest.raises(ValueError, match="Unknown preprocessing op 'rezise'"):
        pp.build("decode|rezise(3)")
    with pytest.raises(ValueError, match="Bad arguments for op 'resize"):
        pp.build("resize(1, 2, 3, 4)")
    with pytest.raises(ValueError, match="Cannot parse"):
        pp.build("resize(")

"""The official .npz format and pre-trained loading (vit_jax.checkpoint)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.special
from flax import traverse_util

from tests.param_trees import assert_trees_equal, flat, logits, random_params
from vit_jax import checkpoint
from vit_jax.errors import CheckpointError
from vit_jax.models import get_model

PUBLISHED_BLOCK_NAMES = {
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}


def abstract_params(model, image_size):
    images = jnp.zeros((1, image_size, image_size, 3))
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images)["params"])


def write_npz_by_hand(path, params, *, published_numbering, group_norm_4d):
    """An .npz written without save_npz, as the official releases were."""
    arrays = {}
    for key, value in flat(params).items():
        parts = key.split("/")
        if published_numbering:
            parts = [PUBLISHED_BLOCK_NAMES.get(part, part) for part in parts]
        if group_norm_4d and len(parts) > 1 and parts[-2].startswith("gn"):
            value = value.reshape(1, 1, 1, -1)
        arrays["/".join(parts)] = value
    np.savez(path, **arrays)


@pytest.fixture(scope="module")
def vit():
    model = get_model("testing", num_classes=10)
    return model, random_params(model, 32)


@pytest.fixture(scope="module")
def hybrid():
    model = get_model("testing-hybrid", num_classes=10)
    return model, random_params(model, 16)


# --- save_npz / load_npz ---------------------------------------------------


@pytest.mark.parametrize("fixture", ["vit", "hybrid"])
def test_save_then_load_round_trips_bit_identically(tmp_path, request, fixture):
    _, params = request.getfixturevalue(fixture)
    checkpoint.save_npz(tmp_path / "model.npz", params)
    assert_trees_equal(checkpoint.load_npz(tmp_path / "model.npz"), params)


def test_saved_file_uses_the_published_layout(tmp_path, hybrid):
    _, params = hybrid
    checkpoint.save_npz(tmp_path / "model.npz", params)
    with np.load(tmp_path / "model.npz") as archive:
        keys = set(archive.files)
        gn_shape = archive["block1/unit1/gn1/scale"].shape
        root_shape = archive["gn_root/bias"].shape
    block = "Transformer/encoderblock_0/"
    for published in (
        "LayerNorm_0/scale",
        "MultiHeadDotProductAttention_1/query/kernel",
        "LayerNorm_2/bias",
        "MlpBlock_3/Dense_1/kernel",
    ):
        assert block + published in keys
    assert not any(name in key for key in keys for name in PUBLISHED_BLOCK_NAMES)
    assert len(keys) == len(flat(params))
    assert gn_shape == (1, 1, 1, params["block1"]["unit1"]["gn1"]["scale"].shape[0])
    assert root_shape == (1, 1, 1, params["gn_root"]["bias"].shape[0])


def test_old_and_new_block_numbering_load_to_the_same_params(tmp_path, vit):
    _, params = vit
    write_npz_by_hand(tmp_path / "old.npz", params, published_numbering=True, group_norm_4d=False)
    write_npz_by_hand(tmp_path / "new.npz", params, published_numbering=False, group_norm_4d=False)
    assert_trees_equal(checkpoint.load_npz(tmp_path / "old.npz"), params)
    assert_trees_equal(checkpoint.load_npz(tmp_path / "new.npz"), params)


def test_a_file_mixing_both_numberings_is_refused(tmp_path, vit):
    _, params = vit
    arrays = {key: value for key, value in flat(params).items()}
    norm = "Transformer/encoderblock_0/LayerNorm_1/scale"
    arrays[norm.replace("LayerNorm_1", "LayerNorm_2")] = arrays[norm]
    np.savez(tmp_path / "mixed.npz", **arrays)
    with pytest.raises(CheckpointError, match="both block numberings"):
        checkpoint.load_npz(tmp_path / "mixed.npz")


def test_hybrid_group_norm_stored_as_1x1x1xC_loads_and_gives_the_same_logits(tmp_path, hybrid):
    model, params = hybrid
    path = tmp_path / "hybrid.npz"
    write_npz_by_hand(path, params, published_numbering=True, group_norm_4d=True)
    loaded = checkpoint.load_npz(path)
    assert loaded["gn_root"]["scale"].shape == params["gn_root"]["scale"].shape
    assert_trees_equal(loaded, params)
    np.testing.assert_array_equal(*logits(model, 16, loaded, params))


def test_a_saved_vit_loaded_for_fine_tuning_gives_the_same_logits(tmp_path, vit):
    model, params = vit
    checkpoint.save_npz(tmp_path / "vit.npz", params)
    fitted = checkpoint.load_pretrained(tmp_path / "vit.npz", abstract_params(model, 32))
    np.testing.assert_array_equal(*logits(model, 32, fitted, params))


def test_bfloat16_params_are_saved_as_float32(tmp_path, vit):
    _, params = vit
    bf16 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), params)
    checkpoint.save_npz(tmp_path / "bf16.npz", bf16)
    loaded = checkpoint.load_npz(tmp_path / "bf16.npz")
    expected = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), bf16)
    assert_trees_equal(loaded, expected)


def test_an_unreadable_file_gives_an_error_naming_its_path(tmp_path, vit):
    _, params = vit
    checkpoint.save_npz(tmp_path / "good.npz", params)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((tmp_path / "good.npz").read_bytes()[:1000])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive")
    for path in (truncated, garbage, tmp_path / "missing.npz"):
        with pytest.raises(CheckpointError, match=str(path)):
            checkpoint.load_npz(path)
        with pytest.raises(CheckpointError, match=str(path)):
            checkpoint.load_pretrained(path, params)


# --- load_pretrained --------------------------------------------------------


def test_a_new_class_count_gets_the_heads_of_init_params(vit):
    _, params = vit
    model = get_model("testing", num_classes=7)
    # Abstract init (jax.eval_shape): the head is the model's zero init.
    fitted = checkpoint.load_pretrained(params, abstract_params(model, 32))
    np.testing.assert_array_equal(fitted["head"]["kernel"], np.zeros((16, 7)))
    np.testing.assert_array_equal(fitted["head"]["bias"], np.zeros(7))
    without_head = lambda tree: {k: v for k, v in tree.items() if k != "head"}  # noqa: E731
    assert_trees_equal(without_head(fitted), without_head(params))
    # Concrete init: its own head values are used, whatever they are.
    init = random_params(model, 32, seed=9)
    fitted = checkpoint.load_pretrained(params, init)
    assert_trees_equal(fitted["head"], init["head"])
    assert_trees_equal(without_head(fitted), without_head(params))


def test_the_same_class_count_keeps_the_pretrained_head(vit):
    model, params = vit
    fitted = checkpoint.load_pretrained(params, abstract_params(model, 32))
    assert_trees_equal(fitted, params)


def test_an_abstract_init_gets_a_head_filled_from_head_bias_init(vit):
    _, params = vit
    model = get_model("testing", num_classes=3, head_bias_init=-2.0)
    fitted = checkpoint.load_pretrained(
        params, abstract_params(model, 32), {"head_bias_init": -2.0}
    )
    np.testing.assert_array_equal(fitted["head"]["bias"], np.full(3, -2.0, np.float32))
    np.testing.assert_array_equal(fitted["head"]["kernel"], np.zeros((16, 3)))


def test_pre_logits_are_dropped_when_the_model_has_none(vit):
    _, params = vit
    pretrain_model = get_model("testing", num_classes=10, representation_size=16)
    pretrained = random_params(pretrain_model, 32, seed=5)
    init = abstract_params(vit[0], 32)
    fitted = checkpoint.load_pretrained(pretrained, init, {"representation_size": None})
    assert "pre_logits" not in fitted
    # Same class count and width, yet the head is new: it was trained on tanh(pre_logits).
    np.testing.assert_array_equal(fitted["head"]["kernel"], np.zeros((16, 10)))
    kept = lambda tree: {k: v for k, v in tree.items() if k not in ("head", "pre_logits")}  # noqa: E731
    assert_trees_equal(kept(fitted), kept(pretrained))


def test_pre_logits_are_kept_when_the_model_has_them():
    model = get_model("testing", num_classes=10, representation_size=16)
    pretrained = random_params(model, 32, seed=5)
    fitted = checkpoint.load_pretrained(
        pretrained, abstract_params(model, 32), {"representation_size": 16}
    )
    assert_trees_equal(fitted, pretrained)


def test_model_config_contradicting_init_params_is_refused(vit):
    model, params = vit
    with pytest.raises(CheckpointError, match="classifier='gap'"):
        checkpoint.load_pretrained(params, abstract_params(model, 32), {"classifier": "gap"})


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_posemb_14x14_to_24x24_equals_scipy_zoom(classifier):
    # Patch size 4: 56 px images give a 14x14 grid, 96 px a 24x24 grid.
    model = get_model("testing", num_classes=10, classifier=classifier)
    pretrained = random_params(model, 56)
    fitted = checkpoint.load_pretrained(pretrained, abstract_params(model, 96))
    old = pretrained["Transformer"]["posembed_input"]["pos_embedding"]
    new = fitted["Transformer"]["posembed_input"]["pos_embedding"]
    prefix = 1 if classifier == "token" else 0
    assert new.shape == (1, prefix + 24 * 24, 16)
    np.testing.assert_array_equal(new[:, :prefix], old[:, :prefix])
    old_grid = old[0, prefix:].reshape(14, 14, 16)
    expected = scipy.ndimage.zoom(old_grid, (24 / 14, 24 / 14, 1), order=1)
    np.testing.assert_array_equal(new[0, prefix:].reshape(24, 24, 16), expected)
    images = jax.ShapeDtypeStruct((2, 96, 96, 3), jnp.float32)
    assert jax.eval_shape(model.apply, {"params": fitted}, images).shape == (2, 10)


def test_zoom_grid_is_bilinear_with_aligned_corners():
    grid = np.random.default_rng(0).normal(size=(5, 7, 3))
    zoomed = checkpoint.zoom_grid(grid, (9, 4))
    # Separable linear interpolation, corners on corners, computed independently.
    rows, cols = np.linspace(0, 4, 9), np.linspace(0, 6, 4)
    along_cols = np.stack(
        [[np.interp(cols, np.arange(7), grid[r, :, d]) for d in range(3)] for r in range(5)]
    )  # (5, 3, 4)
    expected = np.stack(
        [[np.interp(rows, np.arange(5), along_cols[:, d, c]) for c in range(4)] for d in range(3)]
    ).transpose(2, 1, 0)
    np.testing.assert_allclose(zoomed, expected, rtol=1e-12, atol=1e-12)


def test_a_class_token_model_fine_tuned_with_gap_drops_the_token_embedding():
    pretrained = random_params(get_model("testing", num_classes=10), 32)
    target = abstract_params(get_model("testing", num_classes=10, classifier="gap"), 32)
    fitted = checkpoint.load_pretrained(pretrained, target)
    assert "cls" not in fitted
    posemb = pretrained["Transformer"]["posembed_input"]["pos_embedding"]
    np.testing.assert_array_equal(
        fitted["Transformer"]["posembed_input"]["pos_embedding"], posemb[:, 1:]
    )


def test_a_non_square_grid_is_resized_with_the_given_grid():
    model = get_model("testing", num_classes=10)
    pretrained = random_params(model, 56)  # 14x14
    target = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 48, 80, 3)))["params"]
    )  # 12x20
    with pytest.raises(CheckpointError, match=r"grid=\(rows, cols\)"):
        checkpoint.load_pretrained(pretrained, target)
    fitted = checkpoint.load_pretrained(pretrained, target, grid=(12, 20))
    old = pretrained["Transformer"]["posembed_input"]["pos_embedding"][0, 1:].reshape(14, 14, 16)
    expected = scipy.ndimage.zoom(old, (12 / 14, 20 / 14, 1), order=1)
    new = fitted["Transformer"]["posembed_input"]["pos_embedding"]
    np.testing.assert_array_equal(new[0, 1:].reshape(12, 20, 16), expected)


def test_learned_2d_row_and_column_tables_are_resized_linearly():
    model = get_model("testing", num_classes=10, posemb="learn_2d")
    pretrained = random_params(model, 56)  # 14 rows, 14 columns
    target = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 96, 64, 3)))["params"]
    )  # 24 rows, 16 columns
    fitted = checkpoint.load_pretrained(pretrained, target)
    for table, size in (("pos_embedding_row", 24), ("pos_embedding_col", 16)):
        old = pretrained["Transformer"]["posembed_input"][table]
        new = fitted["Transformer"]["posembed_input"][table]
        expected = np.stack(
            [np.interp(np.linspace(0, 13, size), np.arange(14), old[:, d]) for d in range(8)], 1
        )
        np.testing.assert_allclose(new, expected, rtol=1e-6, atol=1e-6)


def test_a_wrong_shape_names_the_key_and_both_shapes(tmp_path, vit):
    _, params = vit
    checkpoint.save_npz(tmp_path / "vit.npz", params)
    wider = abstract_params(get_model("testing", num_classes=10, mlp_dim=64), 32)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_pretrained(tmp_path / "vit.npz", wider)
    message = str(error.value)
    assert "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel" in message
    assert "(16, 32)" in message and "(16, 64)" in message
    assert "Transformer/encoderblock_1/MlpBlock_0/Dense_1/kernel" in message


def test_a_checkpoint_of_another_width_lists_the_first_misfits_and_counts_the_rest(vit):
    _, params = vit
    wider = abstract_params(get_model("testing", num_classes=10, hidden_size=32), 32)
    with pytest.raises(CheckpointError, match=r"\.\.\. and \d+ more\."):
        checkpoint.load_pretrained(params, wider)


def test_a_key_missing_from_the_checkpoint_is_named(vit):
    model, params = vit
    incomplete = flat(params)
    del incomplete["Transformer/encoder_norm/scale"]
    incomplete = traverse_util.unflatten_dict(incomplete, sep="/")
    with pytest.raises(CheckpointError, match="Transformer/encoder_norm/scale: missing"):
        checkpoint.load_pretrained(incomplete, abstract_params(model, 32))


def test_fitted_params_take_the_sharding_and_dtype_of_init_params(vit):
    model, params = vit
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    init = jax.tree_util.tree_map(
        lambda x: jax.device_put(jnp.zeros(x.shape, jnp.bfloat16), replicated), params
    )
    fitted = checkpoint.load_pretrained(params, init)
    for leaf in jax.tree_util.tree_leaves(fitted):
        assert isinstance(leaf, jax.Array)
        assert leaf.sharding == replicated and leaf.dtype == jnp.bfloat16

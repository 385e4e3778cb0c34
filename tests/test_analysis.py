"""Numerical checks of the analyses of Fig. 6 and Fig. 7 on constructed inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.analysis.attention import attention_maps
from vit_jax.analysis.attention_distance import (
    mean_attention_distance,
    patch_distances,
    uniform_attention_distance,
)
from vit_jax.analysis.filters import filter_components
from vit_jax.analysis.posemb import posemb_similarity, position_embeddings
from vit_jax.analysis.rollout import attention_rollout, output_to_patches
from vit_jax.models import get_model

IMAGE = 16  # 'testing' has 4x4 patches: a 4x4 grid, 17 tokens with the class token.


def _init(model, seed=0):
    """N(0, 0.5) weights drawn with numpy into the model's shapes: compiling
    `model.init` would take most of this file's time on a CPU."""
    images = jax.ShapeDtypeStruct((1, IMAGE, IMAGE, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: rng.normal(0, 0.5, leaf.shape).astype(np.float32), shapes)


def _random_attention(rng, shape):
    logits = rng.normal(size=shape)
    weights = np.exp(logits)
    return weights / weights.sum(-1, keepdims=True)


def test_attention_maps_are_per_layer_distributions():
    model = get_model("testing", num_classes=5)
    params = _init(model)
    images = jax.random.uniform(jax.random.key(1), (2, IMAGE, IMAGE, 3), minval=-1, maxval=1)
    maps = attention_maps(model, params, images)
    assert maps.shape == (2, 2, 2, 17, 17)  # layers, batch, heads, T, T
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)


def test_rollout_of_identity_attention_is_uniform_over_patches():
    maps = np.broadcast_to(np.eye(17), (3, 2, 4, 17, 17))
    rollout = attention_rollout(maps)
    np.testing.assert_allclose(rollout, np.broadcast_to(np.eye(17), (2, 17, 17)))
    relevance = output_to_patches(rollout, (4, 4), has_class_token=True)
    np.testing.assert_allclose(relevance, np.full((2, 4, 4), 1 / 16))


def test_rollout_of_a_model_with_query_key_zeroed_is_uniform():
    """Zero query and key weights make every attention row uniform; by symmetry
    the class token then draws equally on all patches through every layer."""
    model = get_model("testing", num_classes=5)
    params = _init(model)
    for i in range(2):
        attention = params["Transformer"][f"encoderblock_{i}"]["MultiHeadDotProductAttention_0"]
        for name in ("query", "key"):
            attention[name] = jax.tree.map(jnp.zeros_like, attention[name])
    images = jax.random.uniform(jax.random.key(2), (1, IMAGE, IMAGE, 3), minval=-1, maxval=1)
    maps = attention_maps(model, params, images)
    np.testing.assert_allclose(maps, 1 / 17, atol=1e-6)
    relevance = output_to_patches(attention_rollout(maps), (4, 4), has_class_token=True)
    np.testing.assert_allclose(relevance, 1 / 16, atol=1e-6)


def test_rollout_of_two_layers_is_the_product_of_residual_averaged_maps():
    rng = np.random.default_rng(0)
    maps = _random_attention(rng, (2, 1, 3, 5, 5))
    first = (maps[0, 0].mean(0) + np.eye(5)) / 2  # Rows of A + I sum to 2.
    second = (maps[1, 0].mean(0) + np.eye(5)) / 2
    expected = second @ first
    np.testing.assert_allclose(attention_rollout(maps)[0], expected, atol=1e-12)
    relevance = output_to_patches(attention_rollout(maps), (2, 2), has_class_token=True)
    np.testing.assert_allclose(relevance[0].ravel(), expected[0, 1:] / expected[0, 1:].sum())
    gap_relevance = output_to_patches(attention_rollout(maps[..., 1:, 1:]), (2, 2), False)
    np.testing.assert_allclose(gap_relevance.sum(), 1.0)


def test_attention_distance_of_self_attention_is_zero():
    maps = np.broadcast_to(np.eye(17), (2, 3, 2, 17, 17))
    distance = mean_attention_distance(maps, (4, 4), patch_pixels=16, has_class_token=True)
    assert distance.shape == (2, 2)
    np.testing.assert_allclose(distance, 0.0)


def test_attention_distance_of_uniform_attention_is_the_mean_pairwise_distance():
    """On a 2x2 grid the 16 ordered pairs are 4 at distance 0, 8 neighbours at 1
    and 4 diagonals at sqrt(2) patches; uniform attention averages them."""
    patch = 16
    expected = patch * (8 * 1 + 4 * np.sqrt(2)) / 16
    uniform = np.full((1, 2, 1, 5, 5), 1 / 5)  # Class-token mass is dropped.
    distance = mean_attention_distance(uniform, (2, 2), patch_pixels=patch, has_class_token=True)
    np.testing.assert_allclose(distance, expected)
    np.testing.assert_allclose(uniform_attention_distance((2, 2), patch), expected)
    np.testing.assert_allclose(patch_distances((1, 3), 2.0)[0], [0, 2, 4])


def test_attention_distance_mixes_heads_independently():
    self_only = np.eye(4)
    uniform = np.full((4, 4), 1 / 4)
    maps = np.stack([self_only, uniform])[None, None]  # 1 layer, 1 image, 2 heads
    distance = mean_attention_distance(maps, (2, 2), patch_pixels=1, has_class_token=False)
    np.testing.assert_allclose(distance, [[0.0, (8 + 4 * np.sqrt(2)) / 16]])


def test_learn_2d_position_similarity_shows_rows_and_columns():
    """With orthonormal row and column tables, patches sharing a row or a column
    share half their embedding: cosine 1 with itself, 1/2 along its row and
    column, 0 elsewhere."""
    model = get_model("testing", num_classes=5, posemb="learn_2d")
    params = _init(model)
    rng = np.random.default_rng(0)
    row_table = np.linalg.qr(rng.normal(size=(8, 8)))[0][:4]  # 4 orthonormal rows of D/2=8
    col_table = np.linalg.qr(rng.normal(size=(8, 8)))[0][:4]
    posembed = params["Transformer"]["posembed_input"]
    posembed["pos_embedding_row"] = jnp.asarray(row_table, jnp.float32)
    posembed["pos_embedding_col"] = jnp.asarray(col_table, jnp.float32)
    similarity = posemb_similarity(position_embeddings(params, (4, 4)), (4, 4))
    assert similarity.shape == (4, 4, 4, 4)
    rows, cols = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    for r in range(4):
        for c in range(4):
            expected = 0.5 * (rows == r) + 0.5 * (cols == c)
            np.testing.assert_allclose(similarity[r, c], expected, atol=1e-5)


def test_learn_1d_position_table_drops_the_class_token():
    model = get_model("testing", num_classes=5)
    params = _init(model)
    table = np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"][0])
    embeddings = position_embeddings(params, (4, 4))
    np.testing.assert_allclose(embeddings, table[1:], rtol=1e-6)
    np.testing.assert_allclose(
        np.diagonal(posemb_similarity(embeddings, (4, 4)).reshape(16, 16)), 1
    )
    with pytest.raises(ValueError, match="does not fit a 3x3 grid"):
        position_embeddings(params, (3, 3))


def test_filter_components_recover_the_dominant_pattern():
    """Filters = random multiples of two fixed patterns plus small noise: the
    two leading components span those patterns and explain nearly all variance."""
    rng = np.random.default_rng(0)
    patterns = np.linalg.qr(rng.normal(size=(4 * 4 * 3, 2)))[0].T  # 2 orthonormal (48,)
    coefficients = rng.normal(size=(64, 2)) * np.array([3.0, 1.0])
    filters = coefficients @ patterns + 1e-3 * rng.normal(size=(64, 48))
    kernel = filters.T.reshape(4, 4, 3, 64)
    components, ratio = filter_components(kernel, count=3)
    assert components.shape == (3, 4, 4, 3)
    assert ratio[0] > ratio[1] > ratio[2] and ratio[:2].sum() > 0.999
    leading = components[:2].reshape(2, -1)
    np.testing.assert_allclose(np.abs(leading @ patterns.T).max(axis=1), 1.0, atol=1e-4)

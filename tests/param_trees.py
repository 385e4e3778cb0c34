"""Parameter trees for the checkpoint and conversion tests: random values in
every leaf, logits of several trees, exact comparison."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util


def random_params(model, image_size, seed=0):
    """Initialised parameters with every leaf replaced by random values, so
    that a zero head or unit GroupNorm scale cannot hide a loading mistake."""
    images = jnp.zeros((1, image_size, image_size, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images)["params"])
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    rng = np.random.default_rng(seed)
    values = [rng.normal(size=leaf.shape).astype(np.float32) for leaf in leaves]
    return jax.tree_util.tree_unflatten(treedef, values)


def logits(model, image_size, *param_trees):
    """The logits of each tree on the same random images. One jitted apply
    serves all trees: compiling once beats op-by-op dispatch on a busy CPU."""
    images = np.random.default_rng(1).uniform(-1, 1, (2, image_size, image_size, 3))
    apply = jax.jit(model.apply)
    return [np.asarray(apply({"params": p}, jnp.asarray(images, jnp.float32))) for p in param_trees]


def flat(params):
    return traverse_util.flatten_dict(params, sep="/")


def assert_trees_equal(actual, expected):
    actual, expected = flat(actual), flat(expected)
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert np.asarray(actual[key]).dtype == np.asarray(value).dtype, key
        np.testing.assert_array_equal(np.asarray(actual[key]), np.asarray(value), err_msg=key)

"""Mesh construction, regex placement rules, and the acceptance check:
3 train steps on a (data=4, fsdp=2) mesh equal 3 steps on one device."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from vit_jax import sharding
from vit_jax.config import default_config
from vit_jax.step import build_trainer


def test_mesh_fills_the_minus_one_axis():
    mesh = sharding.make_mesh([("data", -1), ("fsdp", 2)])
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}


@pytest.mark.parametrize(
    "axes, message",
    [
        ([("data", 3), ("fsdp", 2)], "needs 6 devices but there are 8"),
        ([("data", -1), ("fsdp", 3)], "not divisible"),
        ([("data", -1), ("data", 2)], "twice"),
    ],
)
def test_bad_mesh_is_explained(axes, message):
    with pytest.raises(ValueError, match=message):
        sharding.make_mesh(axes)


def test_batch_not_divisible_by_devices_is_explained():
    mesh = sharding.make_mesh([("data", -1)])
    with pytest.raises(ValueError, match="batch_size=12 is not divisible by the 8"):
        sharding.check_batch_size(12, mesh)


def test_rules_first_match_wins_and_fsdp_picks_largest_divisible_dim():
    mesh = sharding.make_mesh([("data", 2), ("fsdp", 2), ("model", 2)])
    tree = {
        "MlpBlock_0": {"Dense_0": {"kernel": jax.ShapeDtypeStruct((6, 8), jnp.float32)}},
        "embedding": {"kernel": jax.ShapeDtypeStruct((4, 4, 3, 10), jnp.float32)},
        "cls": jax.ShapeDtypeStruct((1, 1, 5), jnp.float32),
    }
    rules = [*sharding.TENSOR_PARALLEL_RULES, (".*", "fsdp")]
    specs = jax.tree.map(lambda s: s.spec, sharding.tree_shardings(tree, mesh, rules))
    assert specs["MlpBlock_0"]["Dense_0"]["kernel"] == PartitionSpec(None, "model")
    assert specs["embedding"]["kernel"] == PartitionSpec(None, None, None, "fsdp")
    assert specs["cls"] == PartitionSpec()  # Nothing divisible by 2: replicated.


def test_rule_with_unknown_axis_is_explained():
    mesh = sharding.make_mesh([("data", -1)])
    tree = {"kernel": jax.ShapeDtypeStruct((4, 4), jnp.float32)}
    with pytest.raises(ValueError, match="axis 'model', which is not in the mesh"):
        sharding.tree_shardings(tree, mesh, [("kernel", (None, "model"))])


def _three_steps(mesh_axes, devices):
    """Params after 3 Adam steps (weight decay, EMA, 2 micro-batches) on a mesh."""
    config = default_config()
    config.update(
        dict(total_steps=10, warmup_steps=2, weight_decay=0.1, ema_decay=0.9, accum_steps=2)
    )
    config.model = ml_collections.ConfigDict({"dropout_rate": 0.1})  # RNG paths too.
    config.model_name = "testing"
    mesh = sharding.make_mesh(mesh_axes, devices)
    trainer = build_trainer(config, 10, (8, 8, 1), mesh)  # The trainer's own step.
    state, step = trainer.init_state(0), trainer.train_step
    rng = np.random.default_rng(0)
    for _ in range(3):
        batch = {
            "image": rng.uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32),
            "labels": np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)],
        }
        state, _ = step(state, jax.device_put(batch, sharding.batch_sharding(mesh)))
    return state


def test_sharded_training_equals_single_device():
    sharded = _three_steps([("data", 4), ("fsdp", 2)], jax.devices())
    single = _three_steps([("data", 1), ("fsdp", 1)], jax.devices()[:1])

    kernel = sharded.params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
    assert kernel.sharding.spec == PartitionSpec(None, "fsdp")  # (16, 32): split by 2.
    assert kernel.addressable_shards[0].data.shape == (16, 16)
    mu = sharded.opt_state[1].mu["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]
    assert mu["kernel"].sharding.spec == PartitionSpec(None, "fsdp")  # Optimizer state too.

    assert int(sharded.step) == int(single.step) == 3

    # The key bias has a zero gradient in exact arithmetic (it shifts all
    # logits of a query equally), so Adam normalises float noise that depends
    # on the reduction order: both runs leave it at noise size (~1e-6), not
    # equal. Every other parameter agrees to float32 reduction noise.
    def assert_same(path, a, b):
        key_bias = jax.tree_util.keystr(path).endswith("['key']['bias']")
        atol = 1e-5 if key_bias else 1e-6
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=atol)

    for tree in ("params", "ema_params"):
        jax.tree_util.tree_map_with_path(assert_same, getattr(sharded, tree), getattr(single, tree))

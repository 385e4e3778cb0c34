"""The attention back-ends: each computes Eq. 2's softmax(q·kᵀ/√d)·v on the
same parameters, and vit_jax.kernels.backends chooses one from the config and
the devices the step is compiled for, never from the running process or from
what this machine has built."""

import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tests.reference_numpy as ref
from tests.test_train_errors import _testing_config
from vit_jax import sharding, train
from vit_jax.kernels import cpu_attention, cudnn_attention
from vit_jax.kernels.backends import choose_attention
from vit_jax.models import attention, get_model
from vit_jax.step import build_trainer


def random(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


def test_default_and_explicit_paths_equal_the_numpy_softmax():
    q, k, v = (random((2, 7, 3, 4), seed) for seed in range(3))
    bias = random((1, 3, 7, 7), 3)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / 2 + bias  # √4 = 2.
    expected = np.einsum("bhqk,bkhd->bqhd", ref.softmax(np.asarray(logits, np.float64)), v)
    fast = attention.dot_product_attention(q, k, v, bias)
    np.testing.assert_allclose(fast, expected, atol=1e-5)

    class Sown:  # What flax hands over as `module` when maps are asked for.
        def sow(self, collection, name, value):
            self.maps = (collection, name, value)

    module = Sown()
    explicit = attention.dot_product_attention(q, k, v, bias, module=module)
    np.testing.assert_allclose(explicit, expected, atol=1e-5)
    assert module.maps[:2] == ("attention", "weights") and module.maps[2].shape == (2, 3, 7, 7)


def test_attention_dropout_drops_weights_and_only_in_training():
    q, k, v = (random((2, 5, 2, 4), seed) for seed in range(3))
    kwargs = dict(dropout_rng=jax.random.key(0), dropout_rate=0.5)
    train = attention.dot_product_attention(q, k, v, deterministic=False, **kwargs)
    evaluate = attention.dot_product_attention(q, k, v, deterministic=True, **kwargs)
    np.testing.assert_allclose(evaluate, attention.dot_product_attention(q, k, v), atol=1e-6)
    assert not np.allclose(train, evaluate)


def fake_mesh(platform, size=1):
    """What the choice reads of a mesh: its devices' platform and its size."""
    devices = np.array([types.SimpleNamespace(platform=platform)] * size)
    return types.SimpleNamespace(devices=devices, size=size)


def test_auto_chooses_from_the_mesh_not_the_process():
    # The process here is a CPU one with 8 devices; the targets differ.
    assert choose_attention("auto", fake_mesh("gpu", 8), jnp.bfloat16)[0] is (
        cudnn_attention.attention_fn
    )
    assert choose_attention("auto", fake_mesh("gpu"), jnp.float32)[0] is (
        attention.dot_product_attention
    )
    assert choose_attention("auto", fake_mesh("tpu", 32), jnp.bfloat16)[0] is (
        attention.dot_product_attention
    )
    eight_cpus = sharding.make_mesh((("data", -1),))
    fn, why = choose_attention("auto", eight_cpus)
    assert fn is attention.dot_product_attention and "8 cpu device(s)" in why


def test_auto_never_takes_the_cpu_kernel_even_once_built(monkeypatch, tmp_path):
    one_cpu = fake_mesh("cpu")
    monkeypatch.setenv("VIT_JAX_CACHE", str(tmp_path))
    assert choose_attention("auto", one_cpu)[0] is attention.dot_product_attention
    assert not list(tmp_path.iterdir())  # Choosing compiled nothing.
    fn, why = choose_attention("cpu", one_cpu)  # Asked for: built (once, cached).
    assert fn is cpu_attention.attention_fn and "asked for" in why
    fn, why = choose_attention("auto", one_cpu)  # Built, yet not asked for.
    assert fn is attention.dot_product_attention and "1 cpu device(s)" in why


def test_bad_choices_name_the_fix():
    with pytest.raises(ValueError, match=r"config.attention='flash'; choose one of"):
        choose_attention("flash", fake_mesh("cpu"))
    with pytest.raises(ValueError, match=r"one CPU device; this step is compiled for 8 cpu"):
        choose_attention("cpu", fake_mesh("cpu", 8))


def test_the_back_end_changes_no_parameter():
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
    default = get_model("testing", num_classes=5)
    cudnn = get_model("testing", num_classes=5, attention_fn=cudnn_attention.attention_fn)
    shapes = lambda model: jax.tree.map(  # noqa: E731
        jnp.shape, model.init(jax.random.key(0), images)["params"]
    )
    assert shapes(cudnn) == shapes(default)


def test_a_run_resumed_after_make_kernels_ends_as_one_that_never_stopped(tmp_path):
    config = _testing_config(total_steps=8, checkpoint_every=4, log_every=4)
    train.train_and_evaluate(config, str(tmp_path / "uninterrupted"))
    resumed = tmp_path / "resumed"
    train.train_and_evaluate(config, str(resumed))
    # As if stopped after step 4's checkpoint: the later state is gone.
    shutil.rmtree(resumed / "checkpoints" / "8")
    (resumed / "params.npz").unlink()

    built = subprocess.run(
        [sys.executable, "-m", "vit_jax.kernels", "build"], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[-2000:]
    mesh = sharding.make_mesh(config.mesh)
    trainer = build_trainer(config, 10, (8, 8, 3), mesh)
    assert trainer.attention.startswith("XLA's attention"), trainer.attention
    train.train_and_evaluate(config, str(resumed))

    with (
        np.load(tmp_path / "uninterrupted" / "params.npz") as a,
        np.load(resumed / "params.npz") as b,
    ):
        assert a.files == b.files
        for name in a.files:
            np.testing.assert_array_equal(b[name], a[name], err_msg=name)

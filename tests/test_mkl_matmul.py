"""matmul_impl="mkl" and attention_impl="cpu": the custom calls equal XLA's
ops, in the model, its gradients and the benchmark's FLOP count; bad set-ups
fail with the fix. The attention kernel alone: tests/test_cpu_attention.py."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import bench, sharding, train
from vit_jax.models import costs, cpu_attention, get_model, mkl_matmul


def random(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_gemm_equals_numpy_for_every_transpose(transpose_a, transpose_b):
    m, k, n = 37, 19, 23  # Odd sizes: leading dimensions must be right.
    a = random((k, m) if transpose_a else (m, k), 0)
    b = random((n, k) if transpose_b else (k, n), 1)
    got = jax.jit(
        lambda a, b: mkl_matmul.gemm(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    )(a, b)
    expected = (np.asarray(a).T if transpose_a else np.asarray(a)) @ (
        np.asarray(b).T if transpose_b else np.asarray(b)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_matmul_and_its_gradients_equal_xlas():
    x, w, dy = random((3, 41, 29), 0), random((29, 17), 1), random((3, 41, 17), 2)
    loss = lambda mm: lambda x, w: jnp.sum(mm(x, w) * dy)  # noqa: E731
    ours = jax.jit(jax.value_and_grad(loss(mkl_matmul.matmul), argnums=(0, 1)))(x, w)
    xla = jax.jit(jax.value_and_grad(loss(jnp.matmul), argnums=(0, 1)))(x, w)
    for got, expected in zip(jax.tree.leaves(ours), jax.tree.leaves(xla), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


# (model options, MKL dense products, CPU attention calls) of a 2-block forward.
CUSTOM_CALL_OPTIONS = [
    ({"matmul_impl": "mkl"}, 6 * 2, 2),  # Every dense layer, and the attention.
    ({"attention_impl": "cpu"}, 0, 2),  # The attention beside XLA's dense layers.
]


@pytest.mark.parametrize("options, dense_calls, attention_calls", CUSTOM_CALL_OPTIONS)
def test_vit_with_custom_call_kernels_equals_xla_and_keeps_the_tree(
    options, dense_calls, attention_calls
):
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
    labels = jnp.array([1, 3])
    xla_model = get_model("testing", num_classes=5)
    mkl_model = get_model("testing", num_classes=5, **options)
    params = xla_model.init(jax.random.key(1), images)["params"]
    mkl_params = mkl_model.init(jax.random.key(1), images)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(mkl_params)
    jax.tree.map(np.testing.assert_array_equal, params, mkl_params)  # Same init too.
    # Move off the init (zero head) so that every gradient is non-trivial.
    params = jax.tree.map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape), params
    )

    def loss(model):
        def fn(p):
            logits = model.apply({"params": p}, images, train=True)
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])

        return jax.jit(jax.value_and_grad(fn))

    (xla_loss, xla_grads), (mkl_loss, mkl_grads) = loss(xla_model)(params), loss(mkl_model)(params)
    np.testing.assert_allclose(mkl_loss, xla_loss, rtol=1e-5)
    for got, expected in zip(jax.tree.leaves(mkl_grads), jax.tree.leaves(xla_grads), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    forward = jax.jit(lambda p: mkl_model.apply({"params": p}, images)).lower(params)
    assert forward.as_text().count(f"@{mkl_matmul.TARGET}(") == dense_calls
    assert forward.as_text().count(f"@{cpu_attention.TARGET}(") == attention_calls


def test_other_dtypes_keep_xlas_dot():
    model = get_model("testing", num_classes=5, matmul_impl="mkl", dtype=jnp.bfloat16)
    images = jnp.zeros((1, 16, 16, 3))
    params = model.init(jax.random.key(0), images)["params"]
    lowered = jax.jit(lambda p: model.apply({"params": p}, images)).lower(params)
    assert mkl_matmul.TARGET not in lowered.as_text()


def test_custom_call_flops_are_counted():
    lowered = jax.jit(
        jax.value_and_grad(lambda x, w: mkl_matmul.matmul(x, w).sum(), argnums=(0, 1))
    ).lower(jnp.ones((4, 3)), jnp.ones((3, 5)))
    # Forward and the two backward products, 2·4·3·5 each.
    assert mkl_matmul.custom_call_flops(lowered.as_text()) == 3 * 2 * 4 * 3 * 5
    assert costs.lowered_flops(lowered) >= 3 * 2 * 4 * 3 * 5


def test_unknown_matmul_impl_lists_the_choices():
    model = get_model("testing", num_classes=5, matmul_impl="blas")
    with pytest.raises(ValueError, match=r"matmul_impl='blas'; choose one of \('xla', 'mkl'\)"):
        model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def test_missing_mkl_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(mkl_matmul.sys, "prefix", str(tmp_path))
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"pip install mkl==.*matmul_impl='xla'"):
        mkl_matmul.find_mkl_runtime()


@pytest.mark.parametrize("option, value", [("matmul_impl", "mkl"), ("attention_impl", "cpu")])
def test_trainer_refuses_custom_calls_on_a_mesh_of_several_devices(option, value):
    config = train.default_config()
    config.model_name = "testing"
    config.model[option] = value
    mesh = sharding.make_mesh([("data", 8)])
    refusal = f"{option}='{value}' runs on one CPU device"
    with pytest.raises(ValueError, match=f"{refusal}, the mesh has 8"):
        train.build_trainer(config, 5, (16, 16, 3), mesh)
    # The benchmark's forward, which builds no trainer, refuses it too.
    args = bench.parse_args(["--model=testing", "--resolution=16", f"--{option}={value}"])
    setting = bench.Setting("testing", 8, 16, "forward", "float32")
    with pytest.raises(ValueError, match=refusal):
        bench.build_forward(setting, args, mesh)


def test_bench_runs_the_mkl_train_step_and_counts_its_flops(tmp_path):
    # In a process of its own with one CPU device (the suite simulates 8).
    results = tmp_path / "results.jsonl"
    flags = ["--model=testing", "--resolution=16", "--rounds=1", "--iters=1", "--batch=8"]
    common = [*flags, "--matmul_sizes=64", "--mode=train", f"--results={results}"]
    env = {**os.environ, "XLA_FLAGS": ""}
    printed = []
    for extra in (["--matmul_impl=mkl"], []):
        command = [sys.executable, "-m", "vit_jax.bench", *common, *extra]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        printed.append(done.stdout)
    assert "matmul mkl" in printed[0] and "matmul mkl" not in printed[1]
    mkl, xla = [json.loads(line) for line in results.read_text().splitlines()]
    assert (mkl["matmul_impl"], xla["matmul_impl"]) == ("mkl", "xla")
    assert mkl["images_per_s"] > 0 and mkl["matmul_gflops"]["mkl"] > 0
    # The custom calls' FLOPs are in the count: level with XLA's own dots'.
    assert mkl["xla_flops_per_step"] == pytest.approx(xla["xla_flops_per_step"], rel=0.05)

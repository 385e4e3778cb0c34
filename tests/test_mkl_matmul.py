"""matmul_impl="mkl": the MKL custom call equals XLA's dot, in the model, its
gradients and the benchmark's FLOP count; bad set-ups fail with the fix."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import bench, sharding, train
from vit_jax.models import get_model, mkl_matmul


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


# (model options, MKL dense products, MKL attention calls) of a 2-block forward.
MKL_OPTIONS = [
    ({"matmul_impl": "mkl"}, 6 * 2, 2),  # Every dense layer, and the attention.
    ({"attention_impl": "mkl"}, 0, 2),  # The attention beside XLA's dense layers.
]


@pytest.mark.parametrize("options, dense_calls, attention_calls", MKL_OPTIONS)
def test_vit_with_mkl_kernels_equals_xla_and_keeps_the_tree(options, dense_calls, attention_calls):
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
    assert forward.as_text().count(f"@{mkl_matmul.ATTENTION}(") == attention_calls


def explicit_attention(q, k, v):
    logits = jnp.einsum("bnqh,bnkh->bnqk", q, k)
    return jnp.einsum("bnqk,bnkh->bnqh", jax.nn.softmax(logits, axis=-1), v)


# Logits of tens, and peaked ones (rows spanning ~1,300) past the kernel's exp
# clamp at −87. Logits of ~1,000 carry float32 rounding of ~1e-4 into the
# weights, in XLA's gradients as in the kernel's (each ≈ 7e-6 of the largest
# gradient, 4,800, away from float64's), hence the gradients' wider atol there.
@pytest.mark.parametrize("scale, grad_atol", [(3.0, 1e-4), (12.0, 0.05)])
@pytest.mark.parametrize("token_major", [False, True])
def test_attention_kernel_and_its_gradients_equal_the_explicit_softmax(
    token_major, scale, grad_atol
):
    # Odd sizes (3 × 5 heads of 19 tokens × 7): strides and row lengths must be right.
    q, k, v, d_out = (scale * random((3, 5, 19, 7), seed) for seed in range(4))
    q64, k64, v64 = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = q64 @ k64.swapaxes(-1, -2)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    exact = (weights / weights.sum(-1, keepdims=True)) @ v64
    # Token-major operands are the same heads laid out (B, T, N, h).
    layout = (lambda x: x.swapaxes(1, 2)) if token_major else (lambda x: x)
    attend = lambda q, k, v: layout(  # noqa: E731
        mkl_matmul.attention(layout(q), layout(k), layout(v), token_major)
    )
    np.testing.assert_allclose(jax.jit(attend)(q, k, v), exact, rtol=1e-5, atol=1e-5)
    loss = lambda attend: lambda q, k, v: jnp.sum(attend(q, k, v) * d_out)  # noqa: E731
    ours = jax.jit(jax.value_and_grad(loss(attend), argnums=(0, 1, 2)))(q, k, v)
    xla = jax.jit(jax.value_and_grad(loss(explicit_attention), argnums=(0, 1, 2)))(q, k, v)
    for got, expected in zip(jax.tree.leaves(ours), jax.tree.leaves(xla), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=grad_atol)


# The models' own head shapes: ViT-B's (197 tokens × 64), ViT-H/14's head
# width (80: five vectors of 16, blocks of 3 + 2) and one past a whole vector
# (20); rows of 197, 50 and 37 end in partial row blocks.
@pytest.mark.parametrize("tokens, head_dim", [(197, 64), (50, 80), (37, 20)])
def test_attention_kernel_at_the_models_head_shapes(tokens, head_dim):
    q, k, v, d_out = (random((2, tokens, 3, head_dim), seed) / 4 for seed in range(4))
    head_major = lambda x: x.swapaxes(1, 2)  # noqa: E731
    attend = lambda q, k, v: mkl_matmul.attention(q, k, v, True)  # noqa: E731
    explicit = lambda q, k, v: head_major(  # noqa: E731
        explicit_attention(head_major(q), head_major(k), head_major(v))
    )
    loss = lambda attend: lambda q, k, v: jnp.sum(attend(q, k, v) * d_out)  # noqa: E731
    ours = jax.jit(jax.value_and_grad(loss(attend), argnums=(0, 1, 2)))(q, k, v)
    xla = jax.jit(jax.value_and_grad(loss(explicit), argnums=(0, 1, 2)))(q, k, v)
    np.testing.assert_allclose(jax.jit(attend)(q, k, v), jax.jit(explicit)(q, k, v), atol=1e-5)
    for got, expected in zip(jax.tree.leaves(ours), jax.tree.leaves(xla), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_attention_kernel_rejects_other_shapes_and_dtypes():
    q = jnp.zeros((1, 2, 5, 4))
    with pytest.raises(ValueError, match="q, k, v of one shape"):
        mkl_matmul.attention(q, jnp.zeros((1, 2, 6, 4)), q)
    with pytest.raises(TypeError, match="float32 only"):
        mkl_matmul.attention(*(q.astype(jnp.bfloat16),) * 3)


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
    assert bench._flops(lowered) >= 3 * 2 * 4 * 3 * 5
    q = jnp.ones((2, 3, 5, 4))
    attention = jax.jit(jax.value_and_grad(lambda q: mkl_matmul.attention(q, q, q).sum()))
    # Two products forward, four backward, 2·(2·3)·5·5·4 FLOPs each.
    assert mkl_matmul.custom_call_flops(attention.lower(q).as_text()) == 6 * 2 * 6 * 5 * 5 * 4
    # The same heads token-major, (B, T, N, h): the same FLOPs.
    tokens_first = jnp.ones((2, 5, 3, 4))
    attention = jax.jit(jax.value_and_grad(lambda q: mkl_matmul.attention(q, q, q, True).sum()))
    assert mkl_matmul.custom_call_flops(attention.lower(tokens_first).as_text()) == (
        6 * 2 * 6 * 5 * 5 * 4
    )


def test_unknown_matmul_impl_lists_the_choices():
    model = get_model("testing", num_classes=5, matmul_impl="blas")
    with pytest.raises(ValueError, match=r"matmul_impl='blas'; choose one of \('xla', 'mkl'\)"):
        model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def test_missing_mkl_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(mkl_matmul.sys, "prefix", str(tmp_path))
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"pip install mkl==.*matmul_impl='xla'"):
        mkl_matmul.find_mkl_runtime()


@pytest.mark.parametrize("option", ["matmul_impl", "attention_impl"])
def test_trainer_refuses_mkl_on_a_mesh_of_several_devices(option):
    config = train.default_config()
    config.model_name = "testing"
    config.model[option] = "mkl"
    mesh = sharding.make_mesh([("data", 8)])
    with pytest.raises(ValueError, match=f"{option}='mkl' runs on one CPU device, the mesh has 8"):
        train.build_trainer(config, 5, (16, 16, 3), mesh)
    # The benchmark's forward, which builds no trainer, refuses it too.
    args = bench.parse_args(["--model=testing", "--resolution=16", f"--{option}=mkl"])
    setting = bench.Setting("testing", 8, 16, "forward", "float32")
    with pytest.raises(ValueError, match=f"{option}='mkl' runs on one CPU device"):
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

"""The optional CPU attention kernel (config.attention="cpu"): softmax(q·kᵀ)·v
and its gradients equal the explicit softmax's at odd sizes, peaked logits and
the models' own head shapes, and under remat; its FLOPs are counted; bad
operands fail clearly; as a model's attention_fn it changes no parameter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.kernels import cpu_attention
from vit_jax.models import get_model
from vit_jax.models.attention import dot_product_attention


def random(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


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
        cpu_attention.attention(layout(q), layout(k), layout(v), token_major)
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
    attend = lambda q, k, v: cpu_attention.attention(q, k, v, True)  # noqa: E731
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
        cpu_attention.attention(q, jnp.zeros((1, 2, 6, 4)), q)
    with pytest.raises(TypeError, match="float32 only"):
        cpu_attention.attention(*(q.astype(jnp.bfloat16),) * 3)


def test_custom_call_flops_are_counted():
    q = jnp.ones((2, 3, 5, 4))
    attention = jax.jit(jax.value_and_grad(lambda q: cpu_attention.attention(q, q, q).sum()))
    # Two products forward, four backward, 2·(2·3)·5·5·4 FLOPs each.
    assert cpu_attention.custom_call_flops(attention.lower(q).as_text()) == 6 * 2 * 6 * 5 * 5 * 4
    # The same heads token-major, (B, T, N, h): the same FLOPs.
    tokens_first = jnp.ones((2, 5, 3, 4))
    attention = jax.jit(jax.value_and_grad(lambda q: cpu_attention.attention(q, q, q, True).sum()))
    assert cpu_attention.custom_call_flops(attention.lower(tokens_first).as_text()) == (
        6 * 2 * 6 * 5 * 5 * 4
    )


def kernel_calls(model) -> int:
    images = jnp.zeros((2, 16, 16, 3))
    params = model.init(jax.random.key(0), images)["params"]
    lowered = jax.jit(lambda p: model.apply({"params": p}, images)).lower(params)
    return lowered.as_text().count(f"@{cpu_attention.TARGET}(")


def test_as_the_models_attention_fn_it_gives_xlas_logits_on_the_same_parameters():
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
    xla = get_model("testing", num_classes=5)
    fused = get_model("testing", num_classes=5, attention_fn=cpu_attention.attention_fn)
    params = xla.init(jax.random.key(1), images)["params"]
    shapes = lambda tree: jax.tree.map(jnp.shape, tree)  # noqa: E731
    assert shapes(fused.init(jax.random.key(1), images)["params"]) == shapes(params)
    assert kernel_calls(fused) == 2 and kernel_calls(xla) == 0  # One a block.
    np.testing.assert_allclose(
        fused.apply({"params": params}, images), xla.apply({"params": params}, images), atol=1e-5
    )
    # Attention maps (analysis) and 16-bit compute take XLA's path.
    _, maps = fused.apply({"params": params}, images, mutable=["attention"])
    assert len(jax.tree.leaves(maps)) == 2
    half = get_model("testing", 5, dtype=jnp.bfloat16, attention_fn=cpu_attention.attention_fn)
    assert kernel_calls(half) == 0


def test_kernel_under_remat_gives_xlas_gradients():
    # jax.checkpoint recomputes the blocks in the backward: the kernel's
    # custom VJP must run again inside the rematerialised forward.
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)

    def grads(attention_fn):
        model = get_model("testing", num_classes=5, remat=True, attention_fn=attention_fn)
        params = model.init(jax.random.key(1), images)["params"]
        params = jax.tree.map(lambda p: p + 0.05 * jnp.ones_like(p), params)
        loss = lambda p: jnp.sum(model.apply({"params": p}, images, train=True) ** 2)  # noqa: E731
        step = jax.jit(jax.grad(loss))
        calls = step.lower(params).as_text().count(f"@{cpu_attention.TARGET}_backward(")
        assert calls == (2 if attention_fn is cpu_attention.attention_fn else 0)  # One a block.
        return step(params)

    for got, expected in zip(
        jax.tree.leaves(grads(cpu_attention.attention_fn)),
        jax.tree.leaves(grads(dot_product_attention)),
        strict=True,
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

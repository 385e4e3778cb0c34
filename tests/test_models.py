"""Models: parameter counts, equality with a numpy reference, FLOPs, options, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_numpy as ref
from scipy.special import erf

from vit_jax import checkpoint
from vit_jax.models import MODEL_NAMES, get_model, layer_stack
from vit_jax.models.costs import abstract_params, count_params, forward_flops
from vit_jax.models.resnet import ResNetSpec, hybrid_stem
from vit_jax.models.vit import exact_gelu

# Exact counts with a 1000-class head, no pre-logits, 224 px (Table 1;
# the paper's 86M/307M/632M are rounded).
EXACT_PARAMS = {
    "ViT-B_16": 86_567_656,
    "ViT-B_32": 88_224_232,
    "ViT-L_16": 304_326_632,
    "ViT-L_32": 306_535_400,
    "ViT-H_14": 632_045_800,
    "ViT-b_32": 22_878_952,  # Fig. 4's half-width ViT-B/32: ViT-S/32's shape.
}


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_vit_parameter_counts_are_exact(name):
    params = abstract_params(get_model(name, num_classes=1000), 224)
    assert count_params(params) == EXACT_PARAMS[name]


def test_bit_r50x1_has_25_5m_parameters():
    count = count_params(abstract_params(get_model("BiT-R50x1", num_classes=1000), 224))
    assert abs(count - 25.5e6) / 25.5e6 < 0.01


def test_every_registered_model_builds():
    """Shapes only (jax.eval_shape): nothing the size of ViT-H is allocated."""
    for name in MODEL_NAMES:
        resolution = 32 if "testing" in name else 224
        params = abstract_params(get_model(name, num_classes=10), resolution)
        assert count_params(params) > 0, name
    # The hybrid /16 tokenises a stride-16 map, the /32 a stride-32 one.
    grid16 = abstract_params(get_model("R50+ViT-B_16", 10), 224)
    grid32 = abstract_params(get_model("R50+ViT-B_32", 10), 224)
    assert grid16["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 197, 768)
    assert grid32["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 50, 768)
    assert "block4" not in grid16 and "block4" in grid32
    assert len(grid16["block3"]) == 9


def test_official_parameter_tree():
    params = abstract_params(get_model("ViT-B_16", 1000, representation_size=768), 224)
    assert set(params) == {"embedding", "cls", "Transformer", "pre_logits", "head"}
    block = params["Transformer"]["encoderblock_11"]
    assert set(block) == {
        "LayerNorm_0",
        "MultiHeadDotProductAttention_0",
        "LayerNorm_1",
        "MlpBlock_0",
    }
    attn = block["MultiHeadDotProductAttention_0"]
    assert attn["query"]["kernel"].shape == (768, 12, 64)
    assert attn["out"]["kernel"].shape == (12, 64, 768)
    assert params["embedding"]["kernel"].shape == (16, 16, 3, 768)
    hybrid = abstract_params(get_model("R50+ViT-B_16", 1000), 224)
    assert {"conv_root", "gn_root", "block1", "block2", "block3"} <= set(hybrid)
    assert set(hybrid["block1"]["unit1"]) == {
        "conv1",
        "conv2",
        "conv3",
        "gn1",
        "gn2",
        "gn3",
        "conv_proj",
        "gn_proj",
    }


def test_vit_b16_forward_flops_match_the_paper():
    """17.6 GMAC = 35.2 GFLOP per 224 px image (App. Table 6's convention)."""
    flops = forward_flops(get_model("ViT-B_16", num_classes=1000), 224)
    assert abs(flops - 35.2e9) / 35.2e9 < 0.02


def _random_params(model, images, seed=0):
    """Initialise (jitted: eager init compiles every op on its own), then add
    noise to every leaf so zero-inits (head, cls) cannot hide mistakes."""
    params = jax.jit(model.init)(jax.random.key(seed), images)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: leaf + 0.3 * rng.standard_normal(leaf.shape).astype(np.float32), params
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"classifier": "gap", "posemb": "learn_2d"},
        {"classifier": "token", "posemb": "learn_2d", "representation_size": 12},
        {"posemb": "relative"},
        {"classifier": "gap", "posemb": "relative"},
        {"posemb": "relative_bias"},
        {"classifier": "gap", "posemb": "none"},
    ],
    ids=[
        "token-1d",
        "gap-2d",
        "token-2d-prelogits",
        "relative",
        "gap-relative",
        "bias",
        "gap-none",
    ],
)
def test_vit_equals_numpy_reference(overrides):
    model = get_model("testing", num_classes=7, **overrides)
    images = jax.random.uniform(jax.random.key(3), (2, 16, 12, 3), minval=-1, maxval=1)
    params = _random_params(model, images)
    logits = model.apply({"params": params}, images, train=False)
    expected = ref.vit_forward(
        jax.tree.map(np.asarray, params),
        np.asarray(images, np.float64),
        patch=4,
        classifier=model.classifier,
        posemb=model.posemb,
    )
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)


def test_fused_and_explicit_attention_agree():
    """Asking for attention maps takes the explicit softmax path; same logits."""
    model = get_model("testing", num_classes=5)
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
    params = _random_params(model, images)
    fused = model.apply({"params": params}, images)
    explicit, state = model.apply({"params": params}, images, mutable=["attention"])
    np.testing.assert_allclose(fused, explicit, atol=1e-5)
    weights = state["attention"]["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_0"][
        "weights"
    ][0]
    assert weights.shape == (2, 2, 17, 17)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


class _Stem(nn.Module):
    spec: ResNetSpec

    @nn.compact
    def __call__(self, x):
        return hybrid_stem(x, self.spec)


def test_hybrid_stem_equals_numpy_reference():
    stem = _Stem(ResNetSpec((1, 2), width_factor=0.5))
    images = jax.random.uniform(jax.random.key(1), (1, 16, 16, 3), minval=-1, maxval=1)
    params = _random_params(stem, images)
    features = stem.apply({"params": params}, images)
    expected = ref.hybrid_stem_forward(
        jax.tree.map(lambda a: np.asarray(a, np.float64), params), np.asarray(images, np.float64)
    )
    assert features.shape == (1, 2, 2, 256)  # stride 4 root, stride 2 stage 2; 4·64 channels.
    np.testing.assert_allclose(np.asarray(features), expected, atol=1e-4, rtol=1e-4)


def test_hybrid_and_bit_models_run():
    images = jnp.zeros((2, 32, 32, 3))
    for name in ("testing-hybrid", "BiT-testing"):
        model = get_model(name, num_classes=4)
        params = jax.jit(model.init)(jax.random.key(0), images)["params"]
        assert jax.jit(model.apply)({"params": params}, images).shape == (2, 4)


def test_num_classes_none_returns_representation():
    model = get_model("testing", num_classes=None, representation_size=6)
    images = jnp.zeros((3, 16, 16, 3))
    params = model.init(jax.random.key(0), images)["params"]
    assert "head" not in params
    assert model.apply({"params": params}, images).shape == (3, 6)


def test_initialisation_follows_the_official_code():
    model = get_model("ViT-S_16", num_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    assert not np.any(params["head"]["kernel"]) and not np.any(params["cls"])
    posemb = params["Transformer"]["posembed_input"]["pos_embedding"]
    assert abs(float(posemb.std()) - 0.02) < 0.002
    kernel = params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
    limit = np.sqrt(6 / (384 + 1536))  # Xavier-uniform bound.
    assert float(jnp.abs(kernel).max()) <= limit and float(jnp.abs(kernel).max()) > 0.9 * limit


def test_exact_gelu_is_the_normal_cdf_form_to_float32_rounding():
    x = np.linspace(-12, 12, 200_001)
    expected = ref.gelu(x, approximate=False)  # float64
    ours = np.asarray(exact_gelu(jnp.asarray(x, jnp.float32)), np.float64)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6)
    # Level with jax.nn.gelu's erfc form, which it replaces for speed.
    erfc_form = np.asarray(jax.nn.gelu(jnp.asarray(x, jnp.float32), approximate=False))
    np.testing.assert_allclose(ours, erfc_form, rtol=0, atol=2e-6)
    # 16-bit inputs: evaluated in float32, so only the output is rounded.
    half = exact_gelu(jnp.asarray(x, jnp.bfloat16))
    assert half.dtype == jnp.bfloat16
    rounded = np.asarray(jnp.asarray(expected, jnp.bfloat16), np.float64)
    np.testing.assert_allclose(np.asarray(half, np.float64), rounded, rtol=0, atol=0.07)
    # The gradient (autodiff through erf) is Φ(x) + x·φ(x).
    grad = np.asarray(jax.vmap(jax.grad(exact_gelu))(jnp.asarray(x, jnp.float32)), np.float64)
    pdf = np.exp(-(x**2) / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(grad, 0.5 * (1 + erf(x / np.sqrt(2))) + x * pdf, rtol=0, atol=3e-6)


def test_bfloat16_compute_keeps_float32_parameters():
    model = get_model("testing", num_classes=3, dtype=jnp.bfloat16)
    images = jnp.ones((2, 16, 16, 3))
    params = model.init(jax.random.key(0), images)["params"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    f32 = get_model("testing", num_classes=3).apply({"params": params}, images)
    bf16 = model.apply({"params": params}, images)
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(bf16, f32, atol=5e-2)


@pytest.mark.parametrize("options", [
    dict(remat=True),
    dict(remat=True, remat_policy="dots"),
    dict(remat=True, remat_policy="dots_no_batch"),
    dict(scan=True),
    dict(scan=True, remat=True, remat_policy="dots_no_batch"),
], ids=["remat", "remat-dots", "remat-dots-no-batch", "scan", "scan-remat"])  # fmt: skip
def test_remat_and_scan_change_memory_not_results(options):
    # The same loss and gradients as the plain model; the scanned model's
    # gradients come stacked and are compared block by block.
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
    plain = get_model("testing", num_classes=3)
    params = _random_params(plain, images)
    other = get_model("testing", num_classes=3, **options)
    other_params = layer_stack.stack_layers(params) if options.get("scan") else params

    def loss(model, p):
        return jnp.sum(model.apply({"params": p}, images, train=True) ** 2)

    loss_and_grads = lambda model: jax.jit(jax.value_and_grad(lambda p: loss(model, p)))  # noqa: E731
    loss_plain, grads_plain = loss_and_grads(plain)(params)
    loss_other, grads_other = loss_and_grads(other)(other_params)
    if options.get("scan"):
        grads_other = layer_stack.unstack_layers(grads_other)
    np.testing.assert_allclose(loss_plain, loss_other, rtol=1e-6)
    jax.tree.map(  # f32 fusion order differs.
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
        grads_plain,
        grads_other,
    )


def test_scanned_model_loads_and_saves_the_published_layout(tmp_path):
    """A scanned ViT keeps its blocks stacked on a leading layer axis; a
    published-layout .npz (saved by the unrolled model, old block numbering)
    loads into it, gives the unrolled model's logits, and saving it writes the
    published layout back, byte for byte the same arrays."""
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
    unrolled = get_model("testing", num_classes=5, representation_size=8)
    scanned = get_model("testing", num_classes=5, representation_size=8, scan=True)
    params = _random_params(unrolled, images)
    checkpoint.save_npz(tmp_path / "published.npz", params)
    with np.load(tmp_path / "published.npz") as archive:
        published = dict(archive)
    assert "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel" in published

    init = jax.jit(scanned.init)(jax.random.key(1), images)["params"]
    assert init["Transformer"]["encoderblock"]["MlpBlock_0"]["Dense_0"]["kernel"].shape == (
        2, 16, 32,
    )  # fmt: skip
    assert not any(k.startswith("encoderblock_") for k in init["Transformer"])
    loaded = checkpoint.load_pretrained(tmp_path / "published.npz", init)
    assert jax.tree.structure(loaded) == jax.tree.structure(init)
    np.testing.assert_allclose(
        scanned.apply({"params": loaded}, images),
        unrolled.apply({"params": params}, images),
        rtol=1e-5,
        atol=1e-6,
    )
    checkpoint.save_npz(tmp_path / "from_scanned.npz", loaded)
    with np.load(tmp_path / "from_scanned.npz") as archive:
        assert sorted(archive.files) == sorted(published)
        for key in published:
            np.testing.assert_array_equal(archive[key], published[key])


def test_scan_refuses_per_layer_position_embeddings():
    images = jnp.ones((1, 16, 16, 3))
    for options in (dict(posemb="relative"), dict(posemb="relative_bias"),
                    dict(stochastic_depth=0.1)):  # fmt: skip
        model = get_model("testing", num_classes=3, scan=True, **options)
        with pytest.raises(ValueError, match="scan=True needs the same block in every layer"):
            model.init(jax.random.key(0), images)


def test_dropout_and_stochastic_depth_only_in_training():
    model = get_model(
        "testing",
        num_classes=3,
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
        stochastic_depth=0.5,
    )
    images = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
    params = _random_params(model, images)
    eval_a = jax.jit(model.apply)({"params": params}, images)
    eval_b = jax.jit(get_model("testing", num_classes=3).apply)({"params": params}, images)
    np.testing.assert_allclose(eval_a, eval_b, atol=1e-6)
    apply_train = jax.jit(
        lambda key: model.apply({"params": params}, images, train=True, rngs={"dropout": key})
    )
    train = lambda seed: apply_train(jax.random.key(seed))  # noqa: E731
    assert not np.allclose(train(0), train(1))
    np.testing.assert_array_equal(train(2), train(2))


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(ValueError, match="Did you mean ViT-B_16"):
        get_model("ViT-B16", num_classes=10)


def test_unknown_override_lists_the_options():
    with pytest.raises(ValueError, match="has no option hidden.*options are"):
        get_model("ViT-B_16", num_classes=10, hidden=3)


def test_bad_option_values_and_image_sizes_are_explained():
    images = jnp.zeros((1, 18, 18, 3))
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        get_model("testing", 2).init(jax.random.key(0), images)
    with pytest.raises(ValueError, match="posemb='sinusoidal'"):
        get_model("testing", 2, posemb="sinusoidal").init(
            jax.random.key(0), jnp.zeros((1, 16, 16, 3))
        )
    with pytest.raises(ValueError, match="classifier='cls'"):
        get_model("testing", 2, classifier="cls").init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="gelu='erf'; choose one of"):
        get_model("testing", 2, gelu="erf").init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))

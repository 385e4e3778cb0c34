"""timm state_dicts in safetensors (vit_jax.convert.timm): every parameter
mapped both ways, and timm's forward (in numpy) on the exported tensors gives
our logits."""

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import scipy.special

from tests.param_trees import assert_trees_equal, flat, logits, random_params
from tests.reference_numpy import gelu as gelu_of
from vit_jax.convert import timm
from vit_jax.errors import CheckpointError
from vit_jax.models import get_model


def timm_keys(num_blocks, *, class_token, pre_logits):
    keys = {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed"}
    keys |= {"norm.weight", "norm.bias", "head.weight", "head.bias"}
    if class_token:
        keys.add("cls_token")
    if pre_logits:
        keys |= {"pre_logits.fc.weight", "pre_logits.fc.bias"}
    for i in range(num_blocks):
        for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{i}.{name}.weight", f"blocks.{i}.{name}.bias"}
    return keys


def layer_norm(x, scale, bias, eps=1e-6):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def timm_forward(state, images, num_heads, gelu="exact"):
    """timm's VisionTransformer.forward, in numpy, on a state_dict: NCHW conv
    weights, torch Linear (out, in) weights, fused qkv split heads-major;
    `gelu` "exact" is timm's default nn.GELU(), "tanh" nn.GELU("tanh")."""
    linear = lambda x, name: x @ state[name + ".weight"].T + state[name + ".bias"]  # noqa: E731
    weight = state["patch_embed.proj.weight"]  # (D, C, P, P)
    hidden, channels, patch, _ = weight.shape
    batch, height, width, _ = images.shape
    patches = images.reshape(batch, height // patch, patch, width // patch, patch, channels)
    x = np.einsum("bhiwjc,dcij->bhwd", patches, weight).reshape(batch, -1, hidden)
    x = x + state["patch_embed.proj.bias"]
    if "cls_token" in state:
        x = np.concatenate([np.broadcast_to(state["cls_token"], (batch, 1, hidden)), x], 1)
    x = x + state["pos_embed"]
    tokens = x.shape[1]
    num_blocks = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    for i in range(num_blocks):
        block = f"blocks.{i}."
        y = layer_norm(x, state[block + "norm1.weight"], state[block + "norm1.bias"])
        qkv = linear(y, block + "attn.qkv").reshape(batch, tokens, 3, num_heads, -1)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)
        attention = scipy.special.softmax(q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1]), -1)
        y = (attention @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, hidden)
        x = x + linear(y, block + "attn.proj")
        y = layer_norm(x, state[block + "norm2.weight"], state[block + "norm2.bias"])
        y = linear(y, block + "mlp.fc1")
        y = gelu_of(y, approximate=gelu == "tanh")
        x = x + linear(y, block + "mlp.fc2")
    x = layer_norm(x, state["norm.weight"], state["norm.bias"])
    x = x[:, 0] if "cls_token" in state else x.mean(1)
    if "pre_logits.fc.weight" in state:
        x = np.tanh(linear(x, "pre_logits.fc"))
    return linear(x, "head")


TIMM_VARIANTS = {
    "token": dict(),
    "gap+pre_logits": dict(classifier="gap", representation_size=12),
}


@pytest.mark.parametrize("variant", sorted(TIMM_VARIANTS))
def test_timm_export_maps_every_param_and_imports_back_exactly(tmp_path, variant):
    overrides = TIMM_VARIANTS[variant]
    model = get_model("testing", num_classes=10, **overrides)
    params = random_params(model, 32)
    path = tmp_path / "model.safetensors"
    timm.export_timm(params, path)
    state = safetensors.numpy.load_file(path)
    expected_keys = timm_keys(
        2,
        class_token=overrides.get("classifier", "token") == "token",
        pre_logits="representation_size" in overrides,
    )
    assert set(state) == expected_keys
    assert sum(v.size for v in state.values()) == sum(v.size for v in flat(params).values())
    assert_trees_equal(timm.import_timm(path), params)
    # The tensors mean what timm means by them: its forward gives our logits,
    # with the GELU form the file's metadata names.
    with safetensors.safe_open(path, "np") as file:
        assert file.metadata()["gelu"] == "tanh"
    images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3))
    state64 = {k: v.astype(np.float64) for k, v in state.items()}
    (ours,) = logits(model, 32, params)
    np.testing.assert_allclose(ours, timm_forward(state64, images, 2, "tanh"), rtol=1e-5, atol=1e-5)
    exact = get_model("testing", num_classes=10, gelu="exact", **overrides)
    (ours_exact,) = logits(exact, 32, params)
    np.testing.assert_allclose(ours_exact, timm_forward(state64, images, 2), rtol=1e-5, atol=1e-5)


def test_timm_import_takes_num_heads_from_argument_model_name_or_metadata(tmp_path):
    model = get_model("testing", num_classes=10)
    params = random_params(model, 32)
    state = timm.to_timm_state_dict(params)
    bare = tmp_path / "bare.safetensors"  # As timm writes it: no head count.
    safetensors.numpy.save_file(state, bare, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="num_heads"):
        timm.import_timm(bare)
    assert_trees_equal(timm.import_timm(bare, num_heads=2), params)
    assert_trees_equal(timm.import_timm(bare, model_name="testing"), params)
    with pytest.raises(CheckpointError, match="not supported for testing-hybrid"):
        timm.import_timm(bare, model_name="testing-hybrid")


def test_timm_import_refuses_keys_it_cannot_place_and_names_missing_ones():
    params = random_params(get_model("testing", num_classes=10), 32)
    state = timm.to_timm_state_dict(params)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.ls1\.gamma"):
        timm.from_timm_state_dict({**state, "blocks.0.ls1.gamma": np.ones(16)}, 2)
    incomplete = {k: v for k, v in state.items() if k != "blocks.1.mlp.fc2.bias"}
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        timm.from_timm_state_dict(incomplete, 2)


def test_timm_export_refuses_models_timm_vits_cannot_hold(tmp_path):
    params = random_params(get_model("testing-hybrid", num_classes=10), 16)
    with pytest.raises(CheckpointError, match="not supported for hybrid"):
        timm.export_timm(params, tmp_path / "hybrid.safetensors")
    learn_2d = random_params(get_model("testing", num_classes=10, posemb="learn_2d"), 32)
    with pytest.raises(CheckpointError, match="learn_2d"):
        timm.to_timm_state_dict(learn_2d)

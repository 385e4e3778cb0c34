"""Hugging Face transformers directories (vit_jax.convert.huggingface), checked
against the real transformers library on PyTorch (CPU): what we export loads
in ViTForImageClassification / ViTModel with our logits and features, and what
transformers writes imports with its logits."""

import jax
import numpy as np
import pytest
import skimage.data
import torch
import transformers
from PIL import Image

from tests.param_trees import assert_trees_equal, random_params
from vit_jax import checkpoint, infer
from vit_jax.convert import huggingface
from vit_jax.errors import CheckpointError
from vit_jax.models import get_model

IMAGE_SIZE = 224


def small_random_params(model, image_size, seed=0):
    """Random values in every leaf, scaled so that 12 blocks keep the logits
    of order one (N(0, 1) weights overflow them)."""
    return jax.tree.map(lambda x: 0.05 * x, random_params(model, image_size, seed))


def images(image_size, batch=2):
    return np.random.default_rng(1).uniform(-1, 1, (batch, image_size, image_size, 3))


def torch_outputs(hf_model, pixels):
    """transformers' forward on NHWC images in [-1, 1] (what we feed ours)."""
    with torch.no_grad():
        return hf_model(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)).float())


def assert_close_relative(actual, expected, rtol=1e-5):
    """Equal within rtol of the largest magnitude (logits near zero carry no scale)."""
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize(
    "name, gelu", [("ViT-Ti_16", "tanh"), ("ViT-S_32", "tanh"), ("ViT-S_32", "exact")]
)
def test_an_exported_vit_gives_our_logits_in_vit_for_image_classification(tmp_path, name, gelu):
    model = get_model(name, num_classes=10, gelu=gelu)
    params = small_random_params(model, IMAGE_SIZE)
    architecture = huggingface.export_transformers(params, tmp_path, gelu=gelu)
    assert architecture == "ViTForImageClassification"
    hf_model = transformers.ViTForImageClassification.from_pretrained(tmp_path).eval()
    assert hf_model.config.layer_norm_eps == 1e-6
    assert hf_model.config.hidden_act == {"tanh": "gelu_pytorch_tanh", "exact": "gelu"}[gelu]
    pixels = images(IMAGE_SIZE)
    ours = np.asarray(model.apply({"params": params}, pixels, train=False))
    assert_close_relative(torch_outputs(hf_model, pixels).logits.numpy(), ours)
    imported = huggingface.import_transformers(tmp_path)
    assert imported.gelu == gelu and imported.image_size == (IMAGE_SIZE, IMAGE_SIZE)
    assert_trees_equal(imported.params, params)


def test_pre_logits_export_as_vit_model_whose_pooler_gives_our_representation(tmp_path):
    model = get_model("testing", num_classes=10, representation_size=24)
    params = small_random_params(model, 32)
    with pytest.raises(CheckpointError, match="drop_head=True"):
        huggingface.export_transformers(params, tmp_path)
    assert huggingface.export_transformers(params, tmp_path, drop_head=True) == "ViTModel"
    hf_model = transformers.ViTModel.from_pretrained(tmp_path).eval()
    pixels = images(32)
    _, state = model.apply({"params": params}, pixels, train=False, mutable=["intermediates"])
    (representation,) = state["intermediates"]["representation"]
    assert_close_relative(torch_outputs(hf_model, pixels).pooler_output.numpy(), representation)
    headless = {k: v for k, v in params.items() if k != "head"}
    assert_trees_equal(huggingface.import_transformers(tmp_path).params, headless)


def test_a_gap_model_is_refused_with_one_message(tmp_path):
    params = random_params(get_model("testing", num_classes=10, classifier="gap"), 32)
    with pytest.raises(CheckpointError, match="classifier='gap' models: transformers' ViT always"):
        huggingface.export_transformers(params, tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_models_transformers_vit_cannot_hold_are_refused(tmp_path):
    hybrid = random_params(get_model("testing-hybrid", num_classes=10), 16)
    with pytest.raises(CheckpointError, match="hybrid"):
        huggingface.export_transformers(hybrid, tmp_path)
    learn_2d = random_params(get_model("testing", num_classes=10, posemb="learn_2d"), 32)
    with pytest.raises(CheckpointError, match="learn_1d"):
        huggingface.export_transformers(learn_2d, tmp_path)


def transformers_vit(hidden_act="gelu", layer_norm_eps=1e-6, **config):
    """A ViTConfig of a small ViT (transformers' own random initialisation)."""
    torch.manual_seed(0)
    return transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        hidden_act=hidden_act,
        layer_norm_eps=layer_norm_eps,
        initializer_range=0.2,  # Large enough that every weight shapes the logits.
        **config,
    )


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_pytorch_tanh", "gelu_new"])
def test_a_directory_written_by_transformers_imports_with_its_logits(tmp_path, hidden_act):
    hf_model = transformers.ViTForImageClassification(transformers_vit(hidden_act, num_labels=5))
    hf_model.eval().save_pretrained(tmp_path)
    imported = huggingface.import_transformers(tmp_path)
    assert imported.gelu == ("exact" if hidden_act == "gelu" else "tanh")
    loaded = infer.model_from_params(imported.params, gelu=imported.gelu)
    assert loaded.image_size == (32, 32) and loaded.module.num_classes == 5
    pixels = images(32)
    ours = np.asarray(loaded.module.apply({"params": imported.params}, pixels, train=False))
    assert_close_relative(ours, torch_outputs(hf_model, pixels).logits.numpy())


def test_a_transformers_vit_model_with_a_pooler_imports_its_pooler_as_pre_logits(tmp_path):
    hf_model = transformers.ViTModel(transformers_vit()).eval()
    hf_model.save_pretrained(tmp_path)
    imported = huggingface.import_transformers(tmp_path)
    module = infer.model_from_params(imported.params, gelu=imported.gelu).module
    assert module.num_classes is None and module.representation_size == 32
    pixels = images(32)
    representation = module.apply({"params": imported.params}, pixels, train=False)
    pooled = torch_outputs(hf_model, pixels).pooler_output.numpy()
    assert_close_relative(np.asarray(representation), pooled)


def test_what_this_model_cannot_compute_is_refused_on_import(tmp_path):
    transformers.ViTModel(transformers_vit(hidden_act="relu")).save_pretrained(tmp_path / "relu")
    with pytest.raises(CheckpointError, match="hidden_act='relu' has no match"):
        huggingface.import_transformers(tmp_path / "relu")
    transformers.ViTModel(transformers_vit(layer_norm_eps=1e-5)).save_pretrained(tmp_path / "eps")
    with pytest.raises(CheckpointError, match="layer_norm_eps=1e-05 has no match"):
        huggingface.import_transformers(tmp_path / "eps")
    # The Hub's google/vit-* files say 1e-12: they import, computing with 1e-6.
    hub_like = transformers.ViTForImageClassification(transformers_vit(layer_norm_eps=1e-12))
    hub_like.save_pretrained(tmp_path / "hub")
    imported = huggingface.import_transformers(tmp_path / "hub")
    module = infer.model_from_params(imported.params, gelu=imported.gelu).module
    pixels = images(32)
    ours = np.asarray(module.apply({"params": imported.params}, pixels, train=False))
    assert_close_relative(ours, torch_outputs(hub_like.eval(), pixels).logits.numpy(), rtol=1e-4)


def test_fine_tuning_starts_from_a_directory_as_from_the_npz(tmp_path):
    model = get_model("testing", num_classes=10)
    params = small_random_params(model, 32)
    huggingface.export_transformers(params, tmp_path / "hf")
    checkpoint.save_npz(tmp_path / "params.npz", params)
    target = jax.eval_shape(
        lambda: get_model("testing", num_classes=3).init(jax.random.key(0), images(48))["params"]
    )
    from_directory = checkpoint.load_pretrained(tmp_path / "hf", target)
    assert_trees_equal(from_directory, checkpoint.load_pretrained(tmp_path / "params.npz", target))


def test_infer_gives_the_same_top5_from_an_exported_directory_as_from_the_npz(tmp_path, capsys):
    model = get_model("testing", num_classes=1000)
    params = small_random_params(model, 32)
    checkpoint.save_npz(tmp_path / "params.npz", params)
    huggingface.export_transformers(params, tmp_path / "hf", labels=infer.imagenet_class_names())
    photo = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    (from_npz,) = infer.main([f"--checkpoint={tmp_path / 'params.npz'}", str(photo)])
    (from_directory,) = infer.main([f"--checkpoint={tmp_path / 'hf'}", str(photo)])
    assert [name for _, name, _ in from_directory] == [name for _, name, _ in from_npz]
    np.testing.assert_allclose(
        [p for *_, p in from_directory], [p for *_, p in from_npz], rtol=1e-5
    )

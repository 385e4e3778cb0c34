"""Hugging Face transformers model directories (config.json + model.safetensors)
of plain ViTs, to and from the official parameter tree.

    export_transformers(params, "vit_dir")      # ViTForImageClassification.from_pretrained
    loaded = import_transformers("vit_dir")     # .params (official tree), .gelu

What the two formats hold differently, and what happens to it:

* The class token. transformers' ViT always prepends one and its classifier
  reads its final state; a `classifier='gap'` model (no class token, mean of
  the patch tokens) has no transformers form and is refused.
* The GELU. transformers' "gelu" is the exact erf form (our gelu="exact");
  "gelu_pytorch_tanh" and "gelu_new" are the tanh form that the official code
  and these models use by default (gelu="tanh"). Export writes the form the
  params were trained with; import reports it (`.gelu`) so the model computes
  the same function; any other activation is refused.
* Layer-norm epsilon: 1e-6 here (the official code's), written to config.json
  (transformers' default is 1e-12). Files with a smaller epsilon (the Hub's
  google/vit-* files say 1e-12) import, computing with 1e-6 (a relative change
  of at most eps / (2·variance) per LayerNorm); a larger one is refused.
* Pre-logits (the pre-training Dense + tanh on the class token).
  ViTForImageClassification classifies the class token's final state
  directly, so a model with pre-logits exports as a `ViTModel` whose pooler
  (Dense + tanh on the class token's state) is the pre-logits layer: its
  `pooler_output` is the representation the head was trained on. The head
  itself has no place beside that pooler: pass `drop_head=True` to export the
  features without it, or the export is refused. Import reads a pooler back
  as pre-logits.
* Models without a head export as a `ViTModel` (`from_pretrained(DIR,
  add_pooling_layer=False)` when they have no pre-logits either).
* Hybrids (R50+ViT), BiT ResNets and other position embeddings than the
  learned 1-D table are refused.

Files are written with the weight names of transformers 4.x (the names of
the ViT files on the Hugging Face Hub), which transformers 5 renames on
load; import reads either naming, with or without the `vit.` prefix.
"""

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import safetensors
import safetensors.numpy
from flax import traverse_util

from vit_jax.errors import CheckpointError
from vit_jax.models.vit import LAYER_NORM_EPSILON

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"  # Sharded weights (large models).

# transformers' hidden_act → our gelu; export writes the first of each form.
_GELU_BY_ACTIVATION = {"gelu": "exact", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh"}
_ACTIVATION_BY_GELU = {"exact": "gelu", "tanh": "gelu_pytorch_tanh"}

# (our path, transformers 4.x name, layout). Layouts: "same"; "linear" (flax
# (in, out) ↔ torch Linear (out, in)); "conv" (HWIO ↔ OIHW); "heads_in"
# ((D, heads, head_dim) ↔ Linear (D, D)); "heads_bias" ((heads, head_dim) ↔
# (D,)); "heads_out" ((heads, head_dim, D) ↔ Linear (D, D)).
_TOP = (
    ("embedding/kernel", "embeddings.patch_embeddings.projection.weight", "conv"),
    ("embedding/bias", "embeddings.patch_embeddings.projection.bias", "same"),
    ("cls", "embeddings.cls_token", "same"),
    ("Transformer/posembed_input/pos_embedding", "embeddings.position_embeddings", "same"),
    ("Transformer/encoder_norm/scale", "layernorm.weight", "same"),
    ("Transformer/encoder_norm/bias", "layernorm.bias", "same"),
    ("pre_logits/kernel", "pooler.dense.weight", "linear"),
    ("pre_logits/bias", "pooler.dense.bias", "same"),
)
_HEAD = (("head/kernel", "classifier.weight", "linear"), ("head/bias", "classifier.bias", "same"))
_ATTENTION = "MultiHeadDotProductAttention_0"
_BLOCK = (
    ("LayerNorm_0/scale", "layernorm_before.weight", "same"),
    ("LayerNorm_0/bias", "layernorm_before.bias", "same"),
    *(
        (f"{_ATTENTION}/{name}/{leaf}", f"attention.attention.{name}.{param}", layout)
        for name in ("query", "key", "value")
        for leaf, param, layout in (
            ("kernel", "weight", "heads_in"),
            ("bias", "bias", "heads_bias"),
        )
    ),
    (f"{_ATTENTION}/out/kernel", "attention.output.dense.weight", "heads_out"),
    (f"{_ATTENTION}/out/bias", "attention.output.dense.bias", "same"),
    ("LayerNorm_1/scale", "layernorm_after.weight", "same"),
    ("LayerNorm_1/bias", "layernorm_after.bias", "same"),
    ("MlpBlock_0/Dense_0/kernel", "intermediate.dense.weight", "linear"),
    ("MlpBlock_0/Dense_0/bias", "intermediate.dense.bias", "same"),
    ("MlpBlock_0/Dense_1/kernel", "output.dense.weight", "linear"),
    ("MlpBlock_0/Dense_1/bias", "output.dense.bias", "same"),
)
_LAYER_4X = "encoder.layer.{i}."
# transformers 5's names inside a layer (its save_pretrained may write them).
_RENAMED_IN_5X = (
    (re.compile(r"^layers\.(\d+)\."), r"encoder.layer.\1."),
    (re.compile(r"\.attention\.([qkv])_proj\."), None),
    (re.compile(r"\.attention\.o_proj\."), ".attention.output.dense."),
    (re.compile(r"\.mlp\.fc1\."), ".intermediate.dense."),
    (re.compile(r"\.mlp\.fc2\."), ".output.dense."),
)
_QKV_5X = {"q": "query", "k": "key", "v": "value"}


@dataclasses.dataclass(frozen=True)
class TransformersCheckpoint:
    """A transformers directory read into this project's terms."""

    params: dict  # The official parameter tree (vit_jax.checkpoint's layout).
    gelu: str  # The model's `gelu` ("tanh" or "exact") that computes the same logits.
    image_size: tuple[int, int]  # config.json's image_size (the position table's grid).


def is_transformers_directory(path) -> bool:
    """Whether `path` is a directory holding a transformers config.json."""
    path = os.fspath(path)
    return "://" not in path and os.path.isfile(os.path.join(path, CONFIG_FILE))


# ---------------------------------------------------------------------------
# Export.


def _host_flat(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{path joined by '/': float32 numpy array} of parameters on this host."""
    if not isinstance(params, Mapping) or not params:
        raise CheckpointError(f"expected a nested dict of parameters, got {type(params)}.")
    return {
        "/".join(path): np.asarray(jax.device_get(value), np.float32)
        for path, value in traverse_util.flatten_dict(params).items()
    }


def _refusal(flat: Mapping[str, np.ndarray], drop_head: bool) -> str | None:
    """Why transformers' ViT cannot hold these parameters, if it cannot."""
    if "conv_root/kernel" in flat:
        return "hybrid (R50+ViT) models: transformers' ViT embeds patches with one convolution"
    if "embedding/kernel" not in flat or not any(k.startswith("Transformer/") for k in flat):
        return "BiT ResNets and other non-ViT models"
    if "cls" not in flat:
        return (
            "classifier='gap' models: transformers' ViT always prepends a class token and "
            "classifies from its final state, not from the mean of the patch tokens"
        )
    if "Transformer/posembed_input/pos_embedding" not in flat:
        return "position embeddings other than the learned 1-D table (posemb='learn_1d')"
    if "pre_logits/kernel" in flat and "head/kernel" in flat and not drop_head:
        return (
            "a head on pre-logits: ViTForImageClassification classifies the class token's "
            "final state directly. Pass drop_head=True to export the features (a ViTModel "
            "whose pooler is the pre-logits layer), or fine-tune without pre-logits "
            "(representation_size=None)"
        )
    return None


def _to_torch(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        value = value.T
    elif layout == "conv":
        value = value.transpose(3, 2, 0, 1)
    elif layout == "heads_in":
        value = value.reshape(value.shape[0], -1).T
    elif layout == "heads_bias":
        value = value.reshape(-1)
    elif layout == "heads_out":
        value = value.reshape(-1, value.shape[-1]).T
    return np.ascontiguousarray(value, np.float32)


def _num_layers(names, pattern: str) -> int:
    indices = {int(m.group(1)) for name in names if (m := re.match(pattern, name))}
    if indices != set(range(len(indices))):
        raise CheckpointError(f"encoder blocks are not numbered 0..n-1: found {sorted(indices)}.")
    return len(indices)


def _image_size(flat, patch: tuple[int, int], image_size) -> tuple[int, int]:
    if image_size is not None:
        return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    patches = flat["Transformer/posembed_input/pos_embedding"].shape[1] - 1
    side = int(round(np.sqrt(patches)))
    if side * side != patches:
        raise CheckpointError(
            f"the position table holds {patches} patch tokens, not a square grid: "
            "pass image_size=(height, width)."
        )
    return side * patch[0], side * patch[1]


def export_transformers(
    params: Mapping[str, Any],
    directory,
    *,
    gelu: str = "tanh",
    image_size: int | tuple[int, int] | None = None,
    drop_head: bool = False,
    labels: list[str] | None = None,
) -> str:
    """Writes a plain ViT as a transformers model directory; returns its class name.

    `gelu` is the form the params were trained with (the model's `gelu`).
    `image_size` is needed only for a non-square grid. `labels` names the
    classes in config.json (id2label); default LABEL_i. With pre-logits, see
    the module docstring (`drop_head`).
    """
    if gelu not in _ACTIVATION_BY_GELU:
        raise CheckpointError(f"gelu={gelu!r}; choose 'tanh' or 'exact' (the model's gelu).")
    flat = _host_flat(params)
    reason = _refusal(flat, drop_head)
    if reason:
        raise CheckpointError(f"transformers' ViT cannot hold {reason}.")
    if drop_head:
        flat = {k: v for k, v in flat.items() if not k.startswith("head/")}
    has_head = "head/kernel" in flat
    prefix = "vit." if has_head else ""  # ViTForImageClassification nests its ViTModel.
    state, remaining = {}, dict(flat)
    for ours, theirs, layout in _TOP + (_HEAD if has_head else ()):
        if ours in remaining:
            name = theirs if theirs.startswith("classifier") else prefix + theirs
            state[name] = _to_torch(remaining.pop(ours), layout)
    num_layers = _num_layers(flat, r"Transformer/encoderblock_(\d+)/")
    for i in range(num_layers):
        for ours, theirs, layout in _BLOCK:
            key = f"Transformer/encoderblock_{i}/{ours}"
            if key not in remaining:
                raise CheckpointError(f"the parameters lack {key}.")
            state[prefix + _LAYER_4X.format(i=i) + theirs] = _to_torch(remaining.pop(key), layout)
    if remaining:
        unplaced = ", ".join(sorted(remaining))
        raise CheckpointError(f"transformers' ViT has no place for: {unplaced}.")

    patch_h, patch_w, channels, hidden = flat["embedding/kernel"].shape
    query = flat[f"Transformer/encoderblock_0/{_ATTENTION}/query/kernel"]
    mlp_in = flat["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"]
    architecture = "ViTForImageClassification" if has_head else "ViTModel"
    height, width = _image_size(flat, (patch_h, patch_w), image_size)
    config = {
        "architectures": [architecture],
        "model_type": "vit",
        "hidden_size": int(hidden),
        "num_hidden_layers": num_layers,
        "num_attention_heads": int(query.shape[1]),
        "intermediate_size": int(mlp_in.shape[1]),
        "hidden_act": _ACTIVATION_BY_GELU[gelu],
        "layer_norm_eps": LAYER_NORM_EPSILON,
        "image_size": height if height == width else [height, width],
        "patch_size": patch_h if patch_h == patch_w else [patch_h, patch_w],
        "num_channels": int(channels),
        "qkv_bias": True,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "dtype": "float32",
    }
    if "pre_logits/kernel" in flat:
        config["pooler_output_size"] = int(flat["pre_logits/kernel"].shape[1])
        config["pooler_act"] = "tanh"
    if has_head:
        num_classes = int(flat["head/kernel"].shape[1])
        labels = labels or [f"LABEL_{i}" for i in range(num_classes)]
        if len(labels) != num_classes:
            raise CheckpointError(f"{len(labels)} labels for a head of {num_classes} classes.")
        config["id2label"] = {str(i): label for i, label in enumerate(labels)}
        config["label2id"] = {label: i for i, label in enumerate(labels)}
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2)
    # "format": "pt" is what transformers expects of a torch state_dict file.
    safetensors.numpy.save_file(state, os.path.join(directory, WEIGHTS_FILE), {"format": "pt"})
    return architecture


# ---------------------------------------------------------------------------
# Import.


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"could not read {path} ({type(e).__name__}: {e}).") from e


def _read_weights(directory: str) -> dict[str, np.ndarray]:
    files = [WEIGHTS_FILE]
    index = os.path.join(directory, WEIGHTS_INDEX_FILE)
    if not os.path.exists(os.path.join(directory, WEIGHTS_FILE)) and os.path.exists(index):
        files = sorted(set(_read_json(index)["weight_map"].values()))
    state = {}
    for name in files:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            pickled = [f for f in os.listdir(directory) if f.endswith((".bin", ".pt", ".pth"))]
            hint = (
                f" It holds {', '.join(pickled)}: save it again with "
                "model.save_pretrained(DIR) (safetensors is its default)."
                if pickled
                else ""
            )
            raise CheckpointError(f"{directory} has no {name}.{hint}")
        try:
            state.update(safetensors.numpy.load_file(path))
        except Exception as e:  # A header or size that does not parse.
            raise CheckpointError(
                f"could not read {path} as safetensors ({type(e).__name__}: {e}); "
                "the file is corrupt or in another format."
            ) from e
    return state


def _name_in_4x(name: str) -> str:
    """A weight name of either transformers naming, without the `vit.` prefix,
    in transformers 4.x's naming."""
    name = name.removeprefix("vit.")
    for pattern, replacement in _RENAMED_IN_5X:
        if replacement is None:  # q/k/v_proj → attention.attention.query/key/value
            name = pattern.sub(lambda m: f".attention.attention.{_QKV_5X[m.group(1)]}.", name)
        else:
            name = pattern.sub(replacement, name)
    return name


def _from_torch(value: np.ndarray, layout: str, num_heads: int) -> np.ndarray:
    if layout == "linear":
        value = value.T
    elif layout == "conv":
        value = value.transpose(2, 3, 1, 0)
    elif layout == "heads_in":
        value = value.T.reshape(value.shape[1], num_heads, -1)
    elif layout == "heads_bias":
        value = value.reshape(num_heads, -1)
    elif layout == "heads_out":
        value = value.T.reshape(num_heads, -1, value.shape[0])
    return np.ascontiguousarray(value, np.float32)


def _gelu_of(config: dict, where: str) -> str:
    activation = config.get("hidden_act", "gelu")
    if activation not in _GELU_BY_ACTIVATION:
        raise CheckpointError(
            f"{where}: hidden_act={activation!r} has no match here; this project computes "
            "GELU in the exact form ('gelu') or the tanh form ('gelu_pytorch_tanh', 'gelu_new')."
        )
    return _GELU_BY_ACTIVATION[activation]


def _check_config(config: dict, where: str) -> None:
    if config.get("model_type") != "vit":
        raise CheckpointError(
            f"{where}: model_type={config.get('model_type')!r}; only transformers' plain ViT "
            "('vit') converts to this project's ViT."
        )
    epsilon = config.get("layer_norm_eps", 1e-12)
    if epsilon > LAYER_NORM_EPSILON:
        raise CheckpointError(
            f"{where}: layer_norm_eps={epsilon} has no match here: these models compute "
            f"LayerNorm with epsilon {LAYER_NORM_EPSILON}."
        )
    if not config.get("qkv_bias", True):
        raise CheckpointError(f"{where}: qkv_bias=false has no match here (attention has biases).")
    if config.get("pooler_act", "tanh") != "tanh" and config.get("pooler_output_size"):
        raise CheckpointError(
            f"{where}: pooler_act={config['pooler_act']!r}; pre-logits here are Dense + tanh."
        )


def import_transformers(directory) -> TransformersCheckpoint:
    """Reads a transformers ViT directory (ViTForImageClassification or
    ViTModel, written by `export_transformers` or by transformers'
    save_pretrained) into the official parameter tree."""
    directory = os.fspath(directory)
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}: not a transformers directory.")
    config = _read_json(config_path)
    _check_config(config, config_path)
    gelu = _gelu_of(config, config_path)
    num_heads = int(config.get("num_attention_heads", 12))
    remaining = {_name_in_4x(name): value for name, value in _read_weights(directory).items()}
    flat = {}

    def take(theirs, ours, layout, optional=False):
        if theirs not in remaining:
            if optional:
                return
            raise CheckpointError(f"{directory}: the weights lack {theirs} (for {ours}).")
        flat[tuple(ours.split("/"))] = _from_torch(remaining.pop(theirs), layout, num_heads)

    for ours, theirs, layout in _TOP:
        take(theirs, ours, layout, optional=theirs.startswith("pooler."))
    for ours, theirs, layout in _HEAD:
        take(theirs, ours, layout, optional=True)
    for i in range(_num_layers(remaining, r"encoder\.layer\.(\d+)\.")):
        for ours, theirs, layout in _BLOCK:
            take(_LAYER_4X.format(i=i) + theirs, f"Transformer/encoderblock_{i}/{ours}", layout)
    remaining.pop("embeddings.mask_token", None)  # ViTForMaskedImageModeling's; unused here.
    if remaining:
        raise CheckpointError(
            f"{directory}: not a plain ViT; no parameter here for: {', '.join(sorted(remaining))}."
        )
    image_size = config.get("image_size", 224)
    image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return TransformersCheckpoint(traverse_util.unflatten_dict(flat), gelu, image_size)

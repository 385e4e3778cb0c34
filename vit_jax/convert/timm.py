"""timm (PyTorch) `state_dict`s of plain ViTs, stored as safetensors.

`export_timm` / `import_timm` write and read a file of timm's
vision_transformer tensor names; `to_timm_state_dict` / `from_timm_state_dict`
are the mappings without files. timm's ViT computes the exact GELU
(`nn.GELU()`); the official code and these models default to flax's tanh form,
so a file records which form its params were trained with (metadata "gelu"):
build timm's model with `act_layer=functools.partial(torch.nn.GELU,
approximate="tanh")` to compute the same logits (the exact form differs by
~1e-4 relative).
"""

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy
from flax import traverse_util

from vit_jax.checkpoint import Params, flat_numpy, to_model_layout
from vit_jax.errors import CheckpointError

# (our path, timm's name, layout) for the parameters that map one to one.
# Layouts: "same"; "linear" (flax (in, out) ↔ torch Linear (out, in));
# "conv" (HWIO ↔ OIHW); "attn_out" ((heads, head_dim, D) ↔ Linear (D, D)).
_TIMM_TOP = (
    ("embedding/kernel", "patch_embed.proj.weight", "conv"),
    ("embedding/bias", "patch_embed.proj.bias", "same"),
    ("cls", "cls_token", "same"),
    ("Transformer/posembed_input/pos_embedding", "pos_embed", "same"),
    ("Transformer/encoder_norm/scale", "norm.weight", "same"),
    ("Transformer/encoder_norm/bias", "norm.bias", "same"),
    # timm's name while it had representation layers (its _load_weights).
    ("pre_logits/kernel", "pre_logits.fc.weight", "linear"),
    ("pre_logits/bias", "pre_logits.fc.bias", "same"),
    ("head/kernel", "head.weight", "linear"),
    ("head/bias", "head.bias", "same"),
)
_TIMM_BLOCK = (
    ("LayerNorm_0/scale", "norm1.weight", "same"),
    ("LayerNorm_0/bias", "norm1.bias", "same"),
    ("MultiHeadDotProductAttention_0/out/kernel", "attn.proj.weight", "attn_out"),
    ("MultiHeadDotProductAttention_0/out/bias", "attn.proj.bias", "same"),
    ("LayerNorm_1/scale", "norm2.weight", "same"),
    ("LayerNorm_1/bias", "norm2.bias", "same"),
    ("MlpBlock_0/Dense_0/kernel", "mlp.fc1.weight", "linear"),
    ("MlpBlock_0/Dense_0/bias", "mlp.fc1.bias", "same"),
    ("MlpBlock_0/Dense_1/kernel", "mlp.fc2.weight", "linear"),
    ("MlpBlock_0/Dense_1/bias", "mlp.fc2.bias", "same"),
)
# Absent for classifier='gap', without pre-logits, and for headless models.
_TIMM_OPTIONAL = (
    "cls_token",
    "pre_logits.fc.weight",
    "pre_logits.fc.bias",
    "head.weight",
    "head.bias",
)
_QKV = ("query", "key", "value")  # timm fuses them, in this order, into attn.qkv.
_ATTENTION = "MultiHeadDotProductAttention_0"
_TIMM_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.")


def _to_torch_layout(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        value = value.T
    elif layout == "conv":
        value = value.transpose(3, 2, 0, 1)
    elif layout == "attn_out":
        value = value.reshape(-1, value.shape[-1]).T
    return np.ascontiguousarray(value)


def _from_torch_layout(value: np.ndarray, layout: str, num_heads: int) -> np.ndarray:
    if layout == "linear":
        value = value.T
    elif layout == "conv":
        value = value.transpose(2, 3, 1, 0)
    elif layout == "attn_out":
        value = value.T.reshape(num_heads, -1, value.shape[0])
    return np.ascontiguousarray(value)


def _unsupported_for_timm(flat: Mapping[str, Any]) -> str | None:
    """Why a tree is not a plain ViT that timm's VisionTransformer can hold."""
    if "conv_root/kernel" in flat:
        return "hybrid (R50+ViT) models"
    if not any(key.startswith("Transformer/") for key in flat):
        return "BiT ResNets"
    if any(key.startswith("Transformer/posembed_input/pos_embedding_") for key in flat):
        return "posemb='learn_2d'"
    if any(key.startswith("Transformer/relpos_") for key in flat):
        return "relative position embeddings (posemb='relative' or 'relative_bias')"
    return None


def _num_blocks(keys, pattern: re.Pattern) -> int:
    indices = {int(m.group(1)) for key in keys if (m := pattern.match(key))}
    if indices != set(range(len(indices))):
        raise CheckpointError(f"encoder blocks are not numbered 0..n-1: found {sorted(indices)}.")
    return len(indices)


def to_timm_state_dict(params: Params) -> dict[str, np.ndarray]:
    """Our ViT parameters (either layout) as timm vision_transformer tensors."""
    return _timm_state_from_flat(_flat_by_name(params))


def _flat_by_name(params: Params) -> dict[str, np.ndarray]:
    return {"/".join(path): value for path, value in to_model_layout(flat_numpy(params)).items()}


def _timm_state_from_flat(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    reason = _unsupported_for_timm(flat)
    if reason:
        raise CheckpointError(f"timm export is not supported for {reason}: only plain ViTs.")
    remaining = dict(flat)
    state = {}
    for ours, theirs, layout in _TIMM_TOP:
        if ours in remaining:
            state[theirs] = _to_torch_layout(remaining.pop(ours), layout)
    for i in range(_num_blocks(flat, re.compile(r"Transformer/encoderblock_(\d+)/"))):
        block = f"Transformer/encoderblock_{i}/"
        for ours, theirs, layout in _TIMM_BLOCK:
            state[f"blocks.{i}.{theirs}"] = _to_torch_layout(remaining.pop(block + ours), layout)
        attention = f"{block}{_ATTENTION}/"
        kernels = [remaining.pop(f"{attention}{name}/kernel") for name in _QKV]
        biases = [remaining.pop(f"{attention}{name}/bias") for name in _QKV]
        # (D, heads, head_dim) → rows of a torch Linear, heads-major as timm reshapes them.
        state[f"blocks.{i}.attn.qkv.weight"] = np.ascontiguousarray(
            np.concatenate([k.reshape(k.shape[0], -1).T for k in kernels])
        )
        state[f"blocks.{i}.attn.qkv.bias"] = np.concatenate([b.reshape(-1) for b in biases])
    if remaining:
        raise CheckpointError(f"timm export has no name for: {', '.join(sorted(remaining))}.")
    return state


def _split_qkv(weight: np.ndarray, bias: np.ndarray, num_heads: int):
    hidden = weight.shape[1]
    if weight.shape[0] != 3 * hidden or hidden % num_heads:
        raise CheckpointError(
            f"attn.qkv.weight has shape {weight.shape}: expected (3*D, D) with D divisible "
            f"by num_heads={num_heads}."
        )
    head_dim = hidden // num_heads
    return {
        name: {
            "kernel": np.ascontiguousarray(w.T.reshape(hidden, num_heads, head_dim)),
            "bias": b.reshape(num_heads, head_dim),
        }
        for name, w, b in zip(_QKV, np.split(weight, 3), np.split(bias, 3), strict=True)
    }


def from_timm_state_dict(state: Mapping[str, np.ndarray], num_heads: int) -> dict:
    """timm vision_transformer tensors → our parameter tree. Every key must be
    understood: layer scale, fc_norm, register tokens and the like are refused."""
    remaining = dict(state)
    flat = {}

    def take(theirs, ours, layout):
        if theirs not in remaining:
            raise CheckpointError(f"the state_dict lacks {theirs} (for {ours}).")
        flat[ours] = _from_torch_layout(np.asarray(remaining.pop(theirs)), layout, num_heads)

    for ours, theirs, layout in _TIMM_TOP:
        if theirs in remaining or theirs not in _TIMM_OPTIONAL:
            take(theirs, ours, layout)
    for i in range(_num_blocks(state, _TIMM_BLOCK_KEY)):
        for ours, theirs, layout in _TIMM_BLOCK:
            take(f"blocks.{i}.{theirs}", f"Transformer/encoderblock_{i}/{ours}", layout)
        qkv = f"blocks.{i}.attn.qkv."
        if qkv + "weight" not in remaining or qkv + "bias" not in remaining:
            raise CheckpointError(f"the state_dict lacks {qkv}weight or {qkv}bias.")
        split = _split_qkv(remaining.pop(qkv + "weight"), remaining.pop(qkv + "bias"), num_heads)
        for name, leaves in split.items():
            for leaf, value in leaves.items():
                flat[f"Transformer/encoderblock_{i}/{_ATTENTION}/{name}/{leaf}"] = value
    if remaining:
        raise CheckpointError(
            "not a plain ViT state_dict; no parameter of ours for: "
            + ", ".join(sorted(remaining))
            + " (timm variants with layer scale, fc_norm, register tokens, ... are not supported)."
        )
    return traverse_util.unflatten_dict({tuple(key.split("/")): v for key, v in flat.items()})


def export_timm(params: Params, path, gelu: str = "tanh") -> None:
    """Writes a plain ViT's parameters as a timm `state_dict` in safetensors,
    loadable with timm's `load_checkpoint` / `model.load_state_dict` after
    `safetensors.torch.load_file`. The head count goes into the metadata so
    that `import_timm` needs no arguments for files written here; so does
    `gelu`, the form the params were trained with (the model's `gelu`)."""
    if gelu not in ("tanh", "exact"):
        raise CheckpointError(f"gelu={gelu!r}; choose 'tanh' or 'exact' (the model's gelu).")
    flat = _flat_by_name(params)
    state = _timm_state_from_flat(flat)
    query = flat.get(f"Transformer/encoderblock_0/{_ATTENTION}/query/kernel")
    # "format": what timm and Hugging Face expect of a torch state_dict.
    metadata = {"format": "pt", "gelu": gelu}
    if query is not None:
        metadata["num_heads"] = str(query.shape[1])
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    safetensors.numpy.save_file(state, path, metadata=metadata)


def _resolve_num_heads(path, num_heads: int | None, model_name: str | None) -> int:
    if num_heads:
        return num_heads
    if model_name:
        from vit_jax.models import model_kwargs  # Only needed for this lookup.

        kwargs = model_kwargs(model_name)
        if "num_heads" not in kwargs or kwargs.get("resnet") is not None:
            raise CheckpointError(f"timm import is not supported for {model_name} (plain ViTs).")
        return kwargs["num_heads"]
    with safetensors.safe_open(path, framework="np") as f:
        stored = (f.metadata() or {}).get("num_heads")
    if stored is None:
        raise CheckpointError(
            f"{path} does not record the number of attention heads (needed to split attn.qkv): "
            "pass num_heads=... or model_name='ViT-B_16'."
        )
    return int(stored)


def import_timm(path, *, num_heads: int | None = None, model_name: str | None = None) -> dict:
    """Reads a timm vision_transformer safetensors file into our parameter tree.

    The attention heads come from `num_heads`, else from `model_name` (one of
    vit_jax.models' names), else from the file's metadata (`export_timm`
    stores it). Only plain ViTs are supported.
    """
    try:
        state = safetensors.numpy.load_file(path)
    except FileNotFoundError as e:
        raise CheckpointError(f"no safetensors file at {path}: check the path.") from e
    except Exception as e:  # A header or size that does not parse.
        raise CheckpointError(
            f"could not read {path} as safetensors ({type(e).__name__}: {e}); "
            "the file is corrupt or in another format."
        ) from e
    return from_timm_state_dict(state, _resolve_num_heads(path, num_heads, model_name))

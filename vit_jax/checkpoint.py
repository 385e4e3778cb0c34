"""Checkpoints: the official .npz format and pre-trained loading.

* `load_npz` / `save_npz`: the published vision_transformer .npz files. A file
  is a flat `np.savez` archive whose keys are the parameter paths joined by
  '/'. The releases use an older numbering inside an encoder block
  (MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3) and store the
  hybrids' GroupNorm scale/bias as (1, 1, 1, C). Loading accepts both
  numberings and both GroupNorm shapes and returns the model's own layout;
  saving writes the published one, so our files and the releases (and timm's
  loader for them) are interchangeable.
* `load_pretrained`: a checkpoint fitted to a freshly initialised model for
  fine-tuning (new head, dropped pre-logits, resized position embeddings).

`load_pretrained` also reads a Hugging Face transformers directory
(vit_jax.convert.huggingface); timm files convert with vit_jax.convert.timm.
Errors are vit_jax.errors.CheckpointError (a UserError, so a ValueError) and
name the file or key at fault.
"""

import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import scipy.ndimage
from absl import logging
from flax import traverse_util

from vit_jax.convert import augreg, huggingface
from vit_jax.errors import CheckpointError
from vit_jax.models import layer_stack

Params = Mapping[str, Any]  # A nested dict of arrays, as model.init(...)['params'].
FlatParams = dict[tuple[str, ...], np.ndarray]


# ---------------------------------------------------------------------------
# The published .npz layout.

# Module names inside `encoderblock_{i}`: the releases' numbering → ours. The
# old names never occur in our layout, so renaming them is unambiguous.
_PUBLISHED_TO_MODEL_BLOCK = {
    "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
    "LayerNorm_2": "LayerNorm_1",
    "MlpBlock_3": "MlpBlock_0",
}
_MODEL_TO_PUBLISHED_BLOCK = {new: old for old, new in _PUBLISHED_TO_MODEL_BLOCK.items()}
_ENCODER_BLOCK = re.compile(r"encoderblock_\d+")
_GROUP_NORM = re.compile(r"gn(_root|_proj|\d+)")  # The ResNet stems' GroupNorm modules.
_PUBLISHED_GROUP_NORM_SHAPE = (1, 1, 1)  # Leading axes of a published GN scale/bias.


def _rename_block_modules(flat: FlatParams, renames: Mapping[str, str]) -> FlatParams:
    """Renames the module directly under each encoder block; refuses collisions,
    which only a file mixing both numberings would produce."""
    out = {}
    for path, value in flat.items():
        new_path = tuple(
            renames.get(name, name) if i > 0 and _ENCODER_BLOCK.fullmatch(path[i - 1]) else name
            for i, name in enumerate(path)
        )
        if new_path in out:
            raise CheckpointError(
                f"parameter {'/'.join(new_path)} appears under both block numberings "
                "(e.g. LayerNorm_1 and LayerNorm_2 in one block); the checkpoint is inconsistent."
            )
        out[new_path] = value
    return out


def _is_group_norm_param(path: tuple[str, ...]) -> bool:
    is_norm_leaf = len(path) >= 2 and path[-1] in ("scale", "bias")
    return is_norm_leaf and bool(_GROUP_NORM.fullmatch(path[-2]))


def to_model_layout(flat: FlatParams) -> FlatParams:
    """Either numbering and either GroupNorm shape → the model's layout."""
    flat = _rename_block_modules(flat, _PUBLISHED_TO_MODEL_BLOCK)
    return {
        path: value.reshape(value.shape[-1:]) if _is_group_norm_param(path) else value
        for path, value in flat.items()
    }


def to_published_layout(flat: FlatParams) -> FlatParams:
    """Either layout → the releases' layout (old numbering, GN as (1, 1, 1, C))."""
    flat = _rename_block_modules(to_model_layout(flat), _MODEL_TO_PUBLISHED_BLOCK)
    return {
        path: value.reshape(_PUBLISHED_GROUP_NORM_SHAPE + value.shape)
        if _is_group_norm_param(path)
        else value
        for path, value in flat.items()
    }


def _to_numpy(value) -> np.ndarray:
    """A host numpy copy of one parameter. bfloat16 becomes float32 (exact):
    .npz and safetensors.numpy only know numpy's own dtypes."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        # Parameters sharded across hosts: every host takes part in the gather.
        from jax.experimental import multihost_utils

        value = multihost_utils.process_allgather(value, tiled=True)
    value = np.asarray(value)
    if value.dtype.kind == "V":  # bfloat16 and the other ml_dtypes extensions.
        value = value.astype(np.float32)
    return value


def flat_numpy(params: Params) -> FlatParams:
    """`params` as {path tuple: host numpy array} (see `_to_numpy`)."""
    if not isinstance(params, Mapping) or not params:
        raise CheckpointError(
            f"expected a nested dict of parameters (model.init(...)['params']), got {type(params)}."
        )
    return {path: _to_numpy(value) for path, value in traverse_util.flatten_dict(params).items()}


def _open(path, mode: str):
    path = os.fspath(path)
    if "://" in path:
        # gs://, s3://, ...: TensorFlow's file systems, as the official code
        # uses. Imported here because importing TensorFlow takes seconds.
        import tensorflow as tf

        return tf.io.gfile.GFile(path, mode)
    return open(path, mode)


def load_npz(path) -> dict:
    """Reads an official (or `save_npz`) checkpoint into the model's layout:
    a nested dict of numpy arrays, new block numbering, GroupNorm as (C,)."""
    try:
        with _open(path, "rb") as f, np.load(f, allow_pickle=False) as archive:
            flat = {tuple(key.split("/")): archive[key] for key in archive.files}
    except FileNotFoundError as e:
        raise CheckpointError(f"no checkpoint at {path}: check the path.") from e
    except Exception as e:  # zipfile, pickle and I/O errors all mean "unreadable".
        raise CheckpointError(
            f"could not read the checkpoint {path} ({type(e).__name__}: {e}); "
            "the file is corrupt, truncated or not an .npz archive: download or save it again."
        ) from e
    if not flat:
        raise CheckpointError(f"the checkpoint {path} holds no arrays.")
    return traverse_util.unflatten_dict(to_model_layout(flat))


def save_npz(path, params: Params) -> None:
    """Writes `params` (either layout, scanned blocks unstacked) in the published
    layout, keys joined by '/'. Local files are written to a temporary name and renamed, so a reader
    never sees half a file."""
    flat = to_published_layout(layer_stack.unstack_flat(flat_numpy(params)))
    arrays = {"/".join(path): value for path, value in flat.items()}
    path = os.fspath(path)
    if "://" in path:
        with _open(path, "wb") as f:
            np.savez(f, **arrays)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as f:
        np.savez(f, **arrays)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------
# Fitting a pre-trained checkpoint to a new model.

_MAX_LISTED_PROBLEMS = 20  # Loading ViT-B into ViT-L would list hundreds.
_POSEMB_1D = ("Transformer", "posembed_input", "pos_embedding")
_POSEMB_ROW = ("Transformer", "posembed_input", "pos_embedding_row")
_POSEMB_COL = ("Transformer", "posembed_input", "pos_embedding_col")


def _square_grid(num_tokens: int, what: str, argument: str) -> tuple[int, int]:
    side = int(round(np.sqrt(num_tokens)))
    if side * side != num_tokens:
        raise CheckpointError(
            f"the {what} position embeddings hold {num_tokens} patch tokens, not a square "
            f"grid: pass {argument}=(rows, cols)."
        )
    return side, side


def zoom_grid(grid: np.ndarray, new_shape: tuple[int, ...]) -> np.ndarray:
    """Linear interpolation of the leading axes of `grid` to `new_shape`
    (corners aligned); the last axis (features) is kept. This is exactly
    scipy.ndimage.zoom(grid, (new/old, ..., 1), order=1), the official code's
    resize (Sec. 3.2)."""
    old_shape = grid.shape[:-1]
    if tuple(old_shape) == tuple(new_shape):
        return grid
    factors = [new / old for new, old in zip(new_shape, old_shape, strict=True)] + [1]
    zoomed = scipy.ndimage.zoom(grid, factors, order=1)
    assert zoomed.shape[:-1] == tuple(new_shape), (zoomed.shape, new_shape)
    return zoomed


def resize_pos_embedding(
    posemb: np.ndarray,
    num_tokens: int,
    *,
    source_has_class_token: bool,
    target_has_class_token: bool,
    source_grid: tuple[int, int] | None = None,
    target_grid: tuple[int, int] | None = None,
) -> np.ndarray:
    """A (1, T, D) learned 1-D table resized to `num_tokens` tokens.

    The class token's row is kept (dropped when the target has no class
    token); the patch rows are reshaped to the (rows, cols, D) grid, resized
    bilinearly (`zoom_grid`) and flattened again. Grids default to squares.
    """
    source_prefix, target_prefix = int(source_has_class_token), int(target_has_class_token)
    if target_prefix > source_prefix:
        raise CheckpointError(
            "the model has a class token but the checkpoint's position embeddings have none "
            "(it was trained with classifier='gap'): fine-tune it with classifier='gap'."
        )
    tokens, patches = posemb[:, :target_prefix], posemb[0, source_prefix:]
    source_grid = source_grid or _square_grid(len(patches), "checkpoint's", "pretrained_grid")
    target_grid = target_grid or _square_grid(num_tokens - target_prefix, "model's", "grid")
    if source_grid[0] * source_grid[1] != len(patches):
        raise CheckpointError(
            f"pretrained_grid={source_grid} does not match the checkpoint's {len(patches)} "
            "patch position embeddings."
        )
    if target_grid[0] * target_grid[1] != num_tokens - target_prefix:
        raise CheckpointError(
            f"grid={target_grid} does not match the model's {num_tokens - target_prefix} "
            "patch position embeddings."
        )
    logging.info("Resizing position embeddings from a %s grid to %s.", source_grid, target_grid)
    patches = zoom_grid(patches.reshape(*source_grid, -1), target_grid)
    return np.concatenate([tokens, patches.reshape(1, -1, posemb.shape[-1])], axis=1)


def _config_get(model_config, field: str, default=None):
    if model_config is None:
        return default
    value = model_config.get(field, default)
    return default if value is None else value


def _check_config_matches_init(model_config, init: FlatParams) -> None:
    """The config and the initialised tree must describe the same model; a
    mismatch means the caller initialised a different model than it trains."""
    classifier = _config_get(model_config, "classifier")
    if classifier is not None and (classifier == "token") != (("cls",) in init):
        raise CheckpointError(
            f"model_config says classifier={classifier!r} but init_params "
            f"{'has' if ('cls',) in init else 'lacks'} a class token: pass the "
            "parameters of the model you configured."
        )
    representation = _config_get(model_config, "representation_size")
    has_pre_logits = ("pre_logits", "kernel") in init
    if representation is not None and bool(representation) != has_pre_logits:
        raise CheckpointError(
            f"model_config says representation_size={representation} but init_params "
            f"{'has' if has_pre_logits else 'lacks'} pre_logits: pass the parameters of the "
            "model you configured."
        )


def _head_needs_replacing(restored: FlatParams, init: FlatParams) -> bool:
    """A new head when the class count (or the width feeding it) changed, and
    when pre-logits are dropped: the old head was trained on their output."""
    init_head = {path: leaf for path, leaf in init.items() if path[0] == "head"}
    reasons = [
        f"{'/'.join(path)} {tuple(restored[path].shape)} → {tuple(leaf.shape)}"
        for path, leaf in init_head.items()
        if path in restored and restored[path].shape != tuple(leaf.shape)
    ]
    if any(path not in restored for path in init_head):
        reasons.append("the checkpoint has no head")
    if any(path[0] == "pre_logits" for path in restored) and ("pre_logits", "kernel") not in init:
        reasons.append("pre_logits dropped")
    if reasons and init_head:
        logging.info("Using the model's zero-initialised head (%s).", "; ".join(reasons))
    return bool(reasons)


def _new_head_leaf(path, leaf, model_config):
    """The init's own head leaf, untouched (it may live on other hosts). An
    abstract leaf (from jax.eval_shape) gets the model's head init: zero
    kernel, bias `head_bias_init` (Sec. 3.2: a zero-initialised head)."""
    if not isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    fill = _config_get(model_config, "head_bias_init", 0.0) if path[-1] == "bias" else 0.0
    return _place_like(np.full(leaf.shape, fill, leaf.dtype), leaf)


def _place_like(value, reference):
    """`value` with the dtype and device placement (sharding) of `reference`."""
    value = np.asarray(value).astype(reference.dtype, copy=False)
    sharding = getattr(reference, "sharding", None)
    if sharding is None:
        return value
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _resize_learned_2d(path, value, init_shape) -> np.ndarray:
    """A learn_2d row or column table (n, D/2) resized along n, linearly."""
    if value.shape[1:] != init_shape[1:]:
        raise _shape_error(path, value.shape, init_shape)
    logging.info("Resizing %s from %d to %d entries.", "/".join(path), len(value), init_shape[0])
    return zoom_grid(value, init_shape[:1])


def _shape_error(path, checkpoint_shape, model_shape) -> CheckpointError:
    return CheckpointError(
        f"{'/'.join(path)}: the checkpoint has shape {tuple(checkpoint_shape)} but the model "
        f"expects {tuple(model_shape)}."
    )


def _resize_position_table(name, value, init_shape, restored, init, grid, pretrained_grid):
    """A position table of another resolution fitted to the model's, or the
    shape error for any other parameter."""
    if name == _POSEMB_1D and value.shape[-1] == init_shape[-1]:
        return resize_pos_embedding(
            value,
            init_shape[1],
            source_has_class_token=("cls",) in restored,
            target_has_class_token=("cls",) in init,
            source_grid=pretrained_grid,
            target_grid=grid,
        )
    if name in (_POSEMB_ROW, _POSEMB_COL):
        return _resize_learned_2d(name, value, init_shape)
    raise _shape_error(name, value.shape, init_shape)


def _read_params(path, model_config) -> Params:
    """The parameters of an .npz file or a transformers directory; an AugReg
    file's recipe and a transformers file's GELU form are logged."""
    facts = augreg.parse_name(path)
    if facts:
        logging.info("%s: %s", os.fspath(path), facts.describe())
    if not huggingface.is_transformers_directory(path):
        return load_npz(path)
    imported = huggingface.import_transformers(path)
    model_gelu = _config_get(model_config, "gelu", "tanh")
    if imported.gelu != model_gelu:
        logging.warning(
            "%s was trained with the %s GELU; the model computes the %s form "
            "(config.model.gelu=%r computes the checkpoint's).",
            os.fspath(path),
            imported.gelu,
            model_gelu,
            imported.gelu,
        )
    return imported.params


def load_pretrained(
    path,
    init_params: Params,
    model_config=None,
    *,
    grid: tuple[int, int] | None = None,
    pretrained_grid: tuple[int, int] | None = None,
):
    """A pre-trained checkpoint fitted to a new model, for fine-tuning.

    Args:
      path: an .npz file (official or `save_npz`), a transformers model
        directory (config.json + model.safetensors), or an already loaded
        parameter tree (either block numbering).
      init_params: the freshly initialised parameters of the target model;
        their structure, shapes and dtypes are the truth. Leaves may be
        jax.ShapeDtypeStruct (from jax.eval_shape); leaves with a sharding
        come back as jax.Arrays with that sharding.
      model_config: optional dict/ConfigDict of model fields. Everything is
        inferred from init_params (class token ⇔ 'cls', pre-logits ⇔
        'pre_logits'); `classifier` and `representation_size`, when given, are
        checked against it, and `head_bias_init` fills an abstract head.
      grid, pretrained_grid: (rows, cols) of the model's / checkpoint's patch
        grid, needed only for non-square grids of 1-D position embeddings.

    Returns:
      A tree with exactly the structure and dtypes of init_params, where
      * the head is init_params' own (zero) head when the class count or the
        width feeding it differs, when pre-logits are dropped, or when the
        checkpoint has no head;
      * pre_logits, and any other checkpoint entry the model lacks, is dropped;
      * position embeddings are resized to the model's grid (`zoom_grid`);
      * anything else must match: a missing key or another shape difference
        raises CheckpointError naming every such key and both shapes.
    """
    if isinstance(path, Mapping):
        restored = to_model_layout(flat_numpy(path))
        source = "the given parameter tree"
    else:
        restored = to_model_layout(flat_numpy(_read_params(path, model_config)))
        source = os.fspath(path)
    init = traverse_util.flatten_dict(init_params)
    restored = layer_stack.match_layout(restored, init)  # A scanned model's blocks stacked.
    _check_config_matches_init(model_config, init)
    replace_head = _head_needs_replacing(restored, init)
    problems: list[str] = []  # Every misfit is reported at once, not just the first.

    def fit(key_path, leaf):
        name = tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)
        if name[0] == "head" and replace_head:
            return _new_head_leaf(name, leaf, model_config)
        if name not in restored:
            problems.append(f"{'/'.join(name)}: missing from the checkpoint (model: {leaf.shape}).")
            return leaf
        value = restored[name]
        if value.shape != tuple(leaf.shape):
            try:
                value = _resize_position_table(
                    name, value, tuple(leaf.shape), restored, init, grid, pretrained_grid
                )
            except CheckpointError as e:
                problems.append(str(e))
                return leaf
        return _place_like(value, leaf)

    fitted = jax.tree_util.tree_map_with_path(fit, init_params)
    if problems:
        shown = problems[:_MAX_LISTED_PROBLEMS]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more.")
        raise CheckpointError(
            f"{source} does not fit the model:\n  " + "\n  ".join(shown) + "\nCheck that the "
            "checkpoint is for this architecture (model name, patch size, classifier)."
        )
    dropped = sorted("/".join(name) for name in restored if name not in init)
    if dropped:
        logging.info("Not loaded (the model has no such parameter): %s", ", ".join(dropped))
    return fitted

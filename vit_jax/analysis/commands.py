"""The analysis commands: each reads a checkpoint, writes a PNG figure and an
.npz with the numbers behind it into `out_dir`, and returns their paths."""

import os

import numpy as np
import skimage.data
from absl import logging

from vit_jax.analysis import plots
from vit_jax.analysis.attention import attention_maps
from vit_jax.analysis.attention_distance import mean_attention_distance, uniform_attention_distance
from vit_jax.analysis.filters import filter_components
from vit_jax.analysis.posemb import posemb_similarity, position_embeddings
from vit_jax.analysis.rollout import attention_rollout, output_to_patches
from vit_jax.errors import UserError, reraised_as_user_error
from vit_jax.infer import LoadedModel, load_image, pixels_per_token, preprocess

# scikit-image ships these photos, so the commands work offline.
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def load_photos(paths, loaded: LoadedModel) -> tuple[list[str], np.ndarray]:
    """(names, model inputs) of the image files, or of scikit-image's sample
    photos when no paths are given."""
    if paths:
        with reraised_as_user_error(OSError):  # A missing or unreadable image file.
            images = [load_image(path, loaded.image_size, loaded.channels) for path in paths]
        return [os.path.basename(path) for path in paths], np.stack(images)
    images = [
        preprocess(getattr(skimage.data, name)(), loaded.image_size, loaded.channels)
        for name in SAMPLE_PHOTOS
    ]
    return list(SAMPLE_PHOTOS), np.stack(images)


def _require_vit(loaded: LoadedModel, what: str):
    if not hasattr(loaded.module, "num_heads"):
        raise UserError(
            f"{what} needs a Vision Transformer; {type(loaded.module).__name__} is not."
        )


def _write(out_dir: str, name: str, **numbers) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.npz")
    np.savez(path, **numbers)
    return path


def rollout(params, loaded: LoadedModel, names, images, out_dir: str) -> list[str]:
    """Fig. 6: attention rollout from the output token to the input patches."""
    _require_vit(loaded, "attention rollout")
    maps = attention_maps(loaded.module, params, images)
    joint = attention_rollout(maps)
    relevance = output_to_patches(joint, loaded.grid, loaded.has_class_token)
    for name, patch_map in zip(names, relevance, strict=True):
        row, col = np.unravel_index(patch_map.argmax(), loaded.grid)
        logging.info("%s: most attended patch (row %d, col %d)", name, row, col)
    figure = plots.rollout_figure(os.path.join(out_dir, "rollout.png"), images, relevance, names)
    numbers = _write(out_dir, "rollout", names=np.array(names), relevance=relevance, rollout=joint)
    return [figure, numbers]


def attention_distance(params, loaded: LoadedModel, names, images, out_dir: str) -> list[str]:
    """Fig. 7 right: mean attention distance of every head against depth."""
    _require_vit(loaded, "attention distance")
    maps = attention_maps(loaded.module, params, images)
    patch_pixels = pixels_per_token(loaded.module)[0]
    distances = mean_attention_distance(maps, loaded.grid, patch_pixels, loaded.has_class_token)
    for layer, per_head in enumerate(distances):
        logging.info("layer %d: mean attention distance %s px", layer + 1, np.round(per_head, 1))
    uniform = uniform_attention_distance(loaded.grid, patch_pixels)
    logging.info("uniform attention over the %dx%d grid: %.1f px", *loaded.grid, uniform)
    figure = plots.distance_figure(
        os.path.join(out_dir, "attention_distance.png"), distances, patch_pixels, uniform
    )
    numbers = _write(
        out_dir,
        "attention_distance",
        distance=distances,
        uniform_distance=uniform,
        patch_pixels=patch_pixels,
        images=np.array(names),
    )
    return [figure, numbers]


def posemb(params, loaded: LoadedModel, out_dir: str) -> list[str]:
    """Fig. 7 centre: cosine similarity of the patches' position embeddings."""
    _require_vit(loaded, "position-embedding similarity")
    with reraised_as_user_error():  # A checkpoint without a learned position table.
        embeddings = position_embeddings(params, loaded.grid)
    similarity = posemb_similarity(embeddings, loaded.grid)
    figure = plots.posemb_figure(os.path.join(out_dir, "posemb_similarity.png"), similarity)
    return [figure, _write(out_dir, "posemb_similarity", similarity=similarity)]


def filters(params, loaded: LoadedModel, out_dir: str, count: int = 28) -> list[str]:
    """Fig. 7 left: principal components of the patch-embedding filters."""
    if "embedding" not in params or loaded.module.resnet is not None:
        raise UserError(
            "filter components need a ViT that embeds pixel patches; hybrids embed "
            "ResNet features and BiT models have no patch embedding."
        )
    components, ratio = filter_components(np.asarray(params["embedding"]["kernel"]), count)
    logging.info("explained variance of the first components: %s", np.round(ratio[:5], 3))
    figure = plots.filters_figure(os.path.join(out_dir, "filters.png"), components, ratio)
    return [figure, _write(out_dir, "filters", components=components, explained_variance=ratio)]

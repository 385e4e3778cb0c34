"""Figures of the analyses, drawn with matplotlib's object API (no global
pyplot state, no display needed) and saved as PNG."""

import os

import numpy as np
import skimage.transform
from matplotlib.figure import Figure

from vit_jax.analysis.filters import to_display_range


def _save(figure: Figure, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _as_picture(image: np.ndarray) -> np.ndarray:
    """A [-1, 1] model input as a [0, 1] picture (grey-scale squeezed)."""
    picture = np.clip((np.asarray(image) + 1) / 2, 0, 1)
    return picture[..., 0] if picture.shape[-1] == 1 else picture


def rollout_figure(path: str, images, relevance, titles) -> str:
    """Per image: the photo, the rollout map, and the photo weighted by the map."""
    figure = Figure(figsize=(9, 3 * len(images)))
    axes = figure.subplots(len(images), 3, squeeze=False)
    for row, (image, patch_map, title) in enumerate(zip(images, relevance, titles, strict=True)):
        picture = _as_picture(image)
        height, width = picture.shape[:2]
        # Nearest-neighbour upsampling keeps the patch boundaries honest.
        mask = skimage.transform.resize(patch_map / patch_map.max(), (height, width), order=0)
        weighted = picture * (mask if picture.ndim == 2 else mask[..., None])
        cmap = "gray" if picture.ndim == 2 else None
        axes[row, 0].imshow(picture, cmap=cmap)
        axes[row, 0].set_title(title)
        # In multiples of the uniform weight: 1 means "an average patch".
        shown = axes[row, 1].imshow(patch_map * patch_map.size, cmap="inferno")
        axes[row, 1].set_title("rollout (× uniform)")
        figure.colorbar(shown, ax=axes[row, 1], fraction=0.046)
        axes[row, 2].imshow(weighted, cmap=cmap)
        axes[row, 2].set_title("photo × rollout")
    for axis in axes.ravel():
        axis.set_axis_off()
    return _save(figure, path)


def posemb_figure(path: str, similarity: np.ndarray) -> str:
    """The (rows, cols, rows, cols) similarities as one small map per patch,
    laid out on the patch grid, separated by blank lines."""
    rows, cols = similarity.shape[:2]
    mosaic = np.full((rows * (rows + 1) - 1, cols * (cols + 1) - 1), np.nan)
    for r in range(rows):
        for c in range(cols):
            top, left = r * (rows + 1), c * (cols + 1)
            mosaic[top : top + rows, left : left + cols] = similarity[r, c]
    figure = Figure(figsize=(6, 5.4))
    axis = figure.subplots()
    shown = axis.imshow(mosaic, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    axis.set_title("Position embedding similarity")
    axis.set_xlabel("input patch column")
    axis.set_ylabel("input patch row")
    axis.set_xticks(np.arange(cols) * (cols + 1) + (cols - 1) / 2, np.arange(1, cols + 1))
    axis.set_yticks(np.arange(rows) * (rows + 1) + (rows - 1) / 2, np.arange(1, rows + 1))
    figure.colorbar(shown, ax=axis, label="cosine similarity")
    return _save(figure, path)


def distance_figure(
    path: str, distances: np.ndarray, patch_pixels: float, uniform: float | None = None
) -> str:
    """Mean attention distance of every head (dots) against layer depth, with
    the distance of uniform attention (`uniform`) as a dashed line."""
    layers, heads = distances.shape
    figure = Figure(figsize=(5, 4))
    axis = figure.subplots()
    for head in range(heads):
        axis.scatter(np.arange(1, layers + 1), distances[:, head], s=12, label=f"head {head + 1}")
    if uniform is not None:
        axis.axhline(uniform, color="grey", linestyle="--", linewidth=1, label="uniform attention")
    axis.set_xticks(np.arange(1, layers + 1))
    axis.set_xlabel("network depth (layer)")
    axis.set_ylabel("mean attention distance (pixels)")
    axis.set_title(f"{patch_pixels:g}-pixel patches")
    axis.set_ylim(bottom=0)
    if heads <= 16:
        axis.legend(fontsize="x-small", ncol=2)
    return _save(figure, path)


def filters_figure(path: str, components: np.ndarray, ratio: np.ndarray) -> str:
    """The principal components of the embedding filters as small RGB (or grey) images."""
    count = len(components)
    cols = min(count, 7)
    rows = -(-count // cols)
    figure = Figure(figsize=(1.3 * cols, 1.4 * rows + 0.4))
    axes = figure.subplots(rows, cols, squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.set_axis_off()
        if index < count:
            picture = to_display_range(components[index])
            grey = picture.shape[-1] == 1
            axis.imshow(picture[..., 0] if grey else picture, cmap="gray" if grey else None)
            axis.set_title(f"{100 * ratio[index]:.1f}%", fontsize=8)
    figure.suptitle("Principal components of the patch-embedding filters")
    return _save(figure, path)

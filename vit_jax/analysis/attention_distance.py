"""Mean attention distance per head (Fig. 7 right, App. D.7).

For one query patch, the attention distance is the distance in pixels to
every key patch weighted by the attention paid to it; averaging over query
patches and images gives one number per head, the analogue of a CNN's
receptive field size. Only patch-to-patch attention counts: the class token
has no position, so attention to it is dropped and each query's remaining
weights are re-normalised. The reference point is uniform attention (every
patch weighted alike), the mean pairwise distance of the grid: a head near it
looks everywhere, not far.
"""

import numpy as np


def patch_distances(grid: tuple[int, int], patch_pixels: float) -> np.ndarray:
    """(N, N) Euclidean distance in pixels between the centres of all patch pairs."""
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    centres = np.stack([rows.ravel(), cols.ravel()], axis=-1) * patch_pixels
    return np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)


def uniform_attention_distance(grid: tuple[int, int], patch_pixels: float) -> float:
    """The mean attention distance of a head that attends uniformly to all patches."""
    return float(patch_distances(grid, patch_pixels).mean())


def mean_attention_distance(
    maps: np.ndarray, grid: tuple[int, int], patch_pixels: float, has_class_token: bool
) -> np.ndarray:
    """(layers, batch, heads, T, T) attention → (layers, heads) mean distance in pixels."""
    maps = np.asarray(maps, np.float64)
    if has_class_token:
        maps = maps[..., 1:, 1:]
    num_patches = grid[0] * grid[1]
    if maps.shape[-1] != num_patches:
        raise ValueError(
            f"attention covers {maps.shape[-1]} patches but the grid {grid[0]}x{grid[1]} "
            f"has {num_patches}; check has_class_token and the image size."
        )
    weights = maps / np.maximum(maps.sum(axis=-1, keepdims=True), 1e-12)
    per_query = (weights * patch_distances(grid, patch_pixels)).sum(axis=-1)
    return per_query.mean(axis=(1, 3))  # Over images and query patches.

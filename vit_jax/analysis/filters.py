"""Principal components of the patch-embedding filters (Fig. 7 left).

The embedding is a PxP stride-P convolution with D output filters. Treating
each filter as one P·P·C vector, the leading principal directions of those D
vectors are the patterns the projection is most sensitive to; the paper
shows they resemble plausible low-frequency basis functions.
"""

import numpy as np


def filter_components(kernel: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, P, C, D) kernel → ((count, P, P, C) components, (count,) explained variance ratio).

    Components are unit vectors, ordered by decreasing variance; their sign is
    arbitrary, as in any PCA.
    """
    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim != 4:
        raise ValueError(f"expected a (P, P, C, D) embedding kernel, got shape {kernel.shape}.")
    filters = kernel.reshape(-1, kernel.shape[-1]).T  # (D, P·P·C)
    centred = filters - filters.mean(axis=0)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    count = min(count, directions.shape[0])
    variance = singular**2
    ratio = variance[:count] / max(variance.sum(), 1e-30)
    return directions[:count].reshape(count, *kernel.shape[:3]), ratio


def to_display_range(component: np.ndarray) -> np.ndarray:
    """Min-max scales a component to [0, 1] so it can be shown as an image."""
    low, high = component.min(), component.max()
    return (component - low) / (high - low) if high > low else np.full_like(component, 0.5)

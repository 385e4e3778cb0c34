"""Fashion-MNIST-format IDX files of synthetic images, for --toy runs and the
smoke test: the studies then read them through the project's real IDX loader
(vit_jax.data, dataset 'fashion_mnist' with data_dir) on machines without the
real files. Each class is a bright bar at its own height plus noise, so the
data are learnable but obviously not Fashion-MNIST."""

import os

import numpy as np

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _write_idx(path: str, array: np.ndarray) -> None:
    magic = 0x0800 + array.ndim  # uint8 data, then the rank.
    with open(path, "wb") as f:
        f.write(magic.to_bytes(4, "big"))
        for size in array.shape:
            f.write(int(size).to_bytes(4, "big"))
        f.write(array.astype(np.uint8).tobytes())


def write_toy_fashion_mnist(directory: str, per_class: int = 12, seed: int = 0) -> str:
    """Writes the four IDX files (`per_class` images per class and split, 28×28)."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    for images_name, labels_name in _FILES.values():
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(len(labels), 28, 28))
        for image, label in zip(images, labels, strict=True):
            image[2 + 2 * label : 5 + 2 * label, 4:24] = 230
        _write_idx(os.path.join(directory, images_name), images)
        _write_idx(os.path.join(directory, labels_name), labels)
    return directory

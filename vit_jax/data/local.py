"""Datasets that need no download: scikit-learn's digits and Fashion-MNIST IDX files on disk.

Both load into memory as uint8 images in 0..255 (the range every preprocessing string
assumes) and int64 labels, so the pipeline can index them directly.
"""

import gzip
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from vit_jax.errors import UserError

DIGITS_TEST_SIZE = 360  # 20% of 1797, stratified, fixed seed: train 1437 / test 360.
DIGITS_SPLIT_SEED = 0

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Where Debian's dataset-fashion-mnist package installs the files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX magic numbers: 0x00000803 = uint8 rank-3 tensor (images), 0x00000801 = uint8 rank 1.
_IDX_MAGIC = {3: 2051, 1: 2049}


def load_digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's 8x8 digits as {'train': (images, labels), 'test': ...}.

    Images are (N, 8, 8, 1) uint8: the 0..16 ink counts rescaled to 0..255. The split is a
    stratified 80/20 with a fixed seed, so every run and every process sees the same one.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images,
        labels,
        test_size=DIGITS_TEST_SIZE,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    return {"train": (train_x, train_y), "test": (test_x, test_y)}


def _open_maybe_gzipped(path: pathlib.Path):
    gz = path.with_name(path.name + ".gz")
    if path.exists():
        return open(path, "rb")
    if gz.exists():
        return gzip.open(gz, "rb")
    raise UserError(f"Neither {path} nor {gz} exists.")


def read_idx(path: pathlib.Path) -> np.ndarray:
    """Reads one IDX file (LeCun's MNIST format; `path` or `path`.gz) as a uint8 array."""
    with _open_maybe_gzipped(path) as f:
        header = f.read(4)
        magic = int.from_bytes(header, "big")
        rank = header[3]
        if rank not in _IDX_MAGIC or magic != _IDX_MAGIC[rank]:
            raise UserError(
                f"{path} is not a uint8 IDX file (magic number {magic:#010x}); "
                "expected the Fashion-MNIST/MNIST files as distributed."
            )
        shape = tuple(int.from_bytes(f.read(4), "big") for _ in range(rank))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: header says {shape}, found {data.size} bytes.")
    return data.reshape(shape)


def has_idx_files(directory: str | os.PathLike | None) -> bool:
    """Whether `directory` holds the four Fashion-MNIST IDX files (gzipped or not)."""
    if not directory:
        return False
    root = pathlib.Path(directory)
    names = [name for pair in _IDX_FILES.values() for name in pair]
    return all((root / n).exists() or (root / f"{n}.gz").exists() for n in names)


def load_fashion_mnist_idx(
    directory: str | os.PathLike,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST from its four IDX files: {'train': (images, labels), 'test': ...}."""
    root = pathlib.Path(directory)
    splits = {}
    for split, (images_name, labels_name) in _IDX_FILES.items():
        images = read_idx(root / images_name)[..., None]
        labels = read_idx(root / labels_name).astype(np.int64)
        if len(images) != len(labels):
            raise UserError(f"{root}: {split} has {len(images)} images but {len(labels)} labels.")
        splits[split] = (images, labels)
    return splits


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST as a TFDS dataset built from local IDX files (no network needed).

    Prepare with:
      tfds build --imports vit_jax.data.local fashion_mnist_idx \\
          --manual_dir=/usr/share/datasets/fashion-mnist --data_dir=~/tensorflow_datasets
    """

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte (optionally .gz) in the manual dir, e.g. from Debian's "
        f"dataset-fashion-mnist package ({DEBIAN_FASHION_MNIST_DIR})."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 1)),
                    "label": tfds.features.ClassLabel(names=FASHION_MNIST_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the files' order, so an ordered pass matches the IDX files row by row.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        splits = load_fashion_mnist_idx(dl_manager.manual_dir)
        return {name: self._generate_examples(*arrays) for name, arrays in splits.items()}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield index, {"image": image, "label": int(label)}

"""The real Fashion-MNIST, as Debian's dataset-fashion-mnist installs it, read
by the library (the dataset name 'fashion_mnist') and checked against the
published facts of the data set (Xiao et al. 2017) and an independent decoding
of the IDX files. `make test` installs the package when it is missing."""

import gzip
import pathlib

import numpy as np
import pytest

from vit_jax.data import local
from vit_jax.data.registry import lookup

DIRECTORY = pathlib.Path(local.DEBIAN_FASHION_MNIST_DIR)
# The first ten labels of each split: ankle boot, T-shirt, T-shirt, dress, ...
FIRST_LABELS = {"train": [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], "test": [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]}
# Mean pixel of the training images on a 0..1 scale, as normalisation recipes quote it.
TRAIN_PIXEL_MEAN = 0.2860
FILE_PREFIX = {"train": "train", "test": "t10k"}


@pytest.fixture(scope="module")
def fashion_mnist():
    assert local.has_idx_files(DIRECTORY), (
        f"Fashion-MNIST is not in {DIRECTORY}: `make test` installs it as root; otherwise "
        "run `sudo apt-get install dataset-fashion-mnist`."
    )
    return {split: lookup("fashion_mnist").open(split, None) for split in ("train", "test")}


def _decoded_independently(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The IDX files read with the header sizes fixed: 16 bytes before the
    images, 8 before the labels."""
    prefix = FILE_PREFIX[split]
    with gzip.open(DIRECTORY / f"{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(DIRECTORY / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


@pytest.mark.parametrize("split,per_class", [("train", 6000), ("test", 1000)])
def test_each_split_holds_its_published_images_and_balanced_classes(
    fashion_mnist, split, per_class
):
    split_data = fashion_mnist[split]
    assert split_data.images.shape == (10 * per_class, 28, 28, 1)
    assert split_data.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(split_data.labels), [per_class] * 10)
    assert list(split_data.labels[:10]) == FIRST_LABELS[split]
    images, labels = _decoded_independently(split)
    np.testing.assert_array_equal(split_data.images, images)
    np.testing.assert_array_equal(split_data.labels, labels)


def test_the_training_images_have_the_published_pixel_mean(fashion_mnist):
    mean = fashion_mnist["train"].images.mean() / 255
    assert abs(mean - TRAIN_PIXEL_MEAN) < 1e-4

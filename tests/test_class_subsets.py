"""'NAME/classes_A-B': the classes A..B of an in-memory dataset, relabelled from
0, with the parent's splits and slicing (the data-size study pre-trains on one
half of Fashion-MNIST's classes and probes the other)."""

import numpy as np
import pytest

from experiments.mini.toy_data import write_toy_fashion_mnist
from vit_jax import data
from vit_jax.data import local
from vit_jax.data.registry import lookup
from vit_jax.errors import UserError


def _labels(name: str, split: str, data_dir=None) -> np.ndarray:
    return lookup(name, data_dir).open(split, data_dir).labels


def _parent_labels(split: str) -> np.ndarray:
    return local.load_digits()[split][1]


def test_a_digits_subset_keeps_only_its_classes_relabelled_from_zero():
    parent = _parent_labels("train")
    info = data.get_dataset_info("digits/classes_3-6")
    assert info.num_classes == 4
    assert info.image_shape == (8, 8, 1)
    for split in ("train", "test"):
        expected = np.sum((_parent_labels(split) >= 3) & (_parent_labels(split) <= 6))
        assert info.splits[split] == expected
    labels = _labels("digits/classes_3-6", "train")
    # The same images in the same order: the parent's labels 3..6, minus 3.
    np.testing.assert_array_equal(labels, parent[(parent >= 3) & (parent <= 6)] - 3)
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_slicing_applies_to_the_subset():
    assert data.num_examples("digits/classes_0-4", "train[:100]") == 100
    whole = _labels("digits/classes_0-4", "train")
    np.testing.assert_array_equal(_labels("digits/classes_0-4", "train[:100]"), whole[:100])
    np.testing.assert_array_equal(_labels("digits/classes_0-4", "train[-10:]"), whole[-10:])
    half = data.num_examples("digits/classes_0-4", "train[:50%]")
    assert half == len(whole) // 2


def test_a_single_class_and_the_iterator_one_hot_over_the_subset():
    batches = data.get_iterator(
        "digits/classes_7-9",
        "test",
        batch_size=16,
        preprocess="value_range(-1,1)",
        train=False,
        process_index=0,
        process_count=1,
    )
    batch = next(iter(batches))
    assert batch["labels"].shape == (16, 3)  # onehot(num_classes) of the subset.
    assert data.get_dataset_info("digits/classes_9-9").num_classes == 1
    assert set(np.unique(_labels("digits/classes_9-9", "train"))) == {0}


def test_fashion_mnist_halves_are_disjoint_and_complete(tmp_path):
    directory = write_toy_fashion_mnist(str(tmp_path), per_class=3)
    low = _labels("fashion_mnist/classes_0-4", "train", directory)
    high = _labels("fashion_mnist/classes_5-9", "train", directory)
    assert len(low) == len(high) == 15
    assert set(np.unique(low)) == set(np.unique(high)) == set(range(5))
    low_images = lookup("fashion_mnist/classes_0-4", directory).open("train", directory).images
    high_images = lookup("fashion_mnist/classes_5-9", directory).open("train", directory).images
    parent = lookup("fashion_mnist", directory).open("train", directory)
    np.testing.assert_array_equal(low_images, parent.images[parent.labels <= 4])
    np.testing.assert_array_equal(high_images, parent.images[parent.labels >= 5])


def test_the_real_fashion_mnist_halves():
    # Debian's dataset-fashion-mnist (`make test` installs it); without it the
    # name would fall back to TFDS's fashion_mnist, which has no class subsets.
    assert local.has_idx_files(local.DEBIAN_FASHION_MNIST_DIR), (
        "apt-get install dataset-fashion-mnist"
    )
    low = data.get_dataset_info("fashion_mnist/classes_0-4")
    high = data.get_dataset_info("fashion_mnist/classes_5-9")
    assert low.num_classes == high.num_classes == 5
    # 6,000 training and 1,000 test images per class.
    assert low.splits == high.splits == {"train": 30000, "test": 5000}


@pytest.mark.parametrize(
    "name,message",
    [
        ("digits/classes_4-2", "A <= B < 10"),
        ("digits/classes_5-10", "classes 0..9"),
        ("cifar10/classes_0-4", "in-memory datasets"),
        ("nothing/classes_0-4", "Unknown dataset 'nothing'"),
    ],
)
def test_a_bad_subset_is_a_user_error(name, message):
    with pytest.raises(UserError, match=message):
        data.get_dataset_info(name)


def test_an_unknown_name_mentions_the_subset_syntax():
    with pytest.raises(UserError, match="/classes_A-B"):
        data.get_dataset_info("digits/class_0-4")

"""Every dataset name the project knows, with its splits and class count.

Names: the TFDS datasets of the paper ('imagenet2012', 'cifar10', ...), 'vtab/<task>'
for the 19 VTAB-1k tasks, 'digits' and 'fashion_mnist' (local files), 'folder:PATH'
(the user's own images), 'jft' and 'imagenet21k' (builders the user supplies).

'NAME/classes_A-B' is the part of an in-memory dataset ('digits', 'fashion_mnist'
read from IDX files) whose labels lie in A..B, relabelled 0..B-A, with the parent's
splits (sliced as usual: 'train[:1000]' is the subset's first 1,000 training
images). Two disjoint class ranges of one dataset make a pre-training set and a
transfer target that share no class, e.g. 'fashion_mnist/classes_0-4' (T-shirt/top,
Trouser, Pullover, Dress, Coat) and 'fashion_mnist/classes_5-9' (Sandal, Shirt,
Sneaker, Bag, Ankle boot).
"""

import dataclasses
import difflib
import functools
import re
from collections.abc import Callable

import numpy as np

from vit_jax.data import local
from vit_jax.data.folder import scan_folder
from vit_jax.data.sources import ArraySource
from vit_jax.data.splits import count_examples, resolve_split
from vit_jax.data.tfds_dataset import DatasetInfo, TfdsDataset
from vit_jax.data.vtab import VTAB_TASKS
from vit_jax.errors import UserError, reraised_as_user_error


@dataclasses.dataclass(frozen=True)
class InMemoryDataset:
    """A small dataset loaded whole into memory: `load(data_dir)` -> {split: (images, labels)}."""

    load: Callable[[str | None], dict[str, tuple[np.ndarray, np.ndarray]]]
    num_classes: int
    split_sizes: dict[str, int] | None  # None: count them by loading the data
    image_shape: tuple[int, int, int]

    def info(self, name: str) -> DatasetInfo:
        sizes = self.split_sizes
        if sizes is None:
            sizes = {split: len(labels) for split, (_, labels) in self.load(None).items()}
        return DatasetInfo(name, self.num_classes, dict(sizes), self.image_shape)

    def open(self, split: str, data_dir: str | None) -> ArraySource:
        arrays = self.load(data_dir)
        sizes = {name: len(labels) for name, (_, labels) in arrays.items()}
        with reraised_as_user_error():
            ranges = resolve_split(split, sizes)
        images = np.concatenate([arrays[name][0][a:b] for name, a, b in ranges])
        labels = np.concatenate([arrays[name][1][a:b] for name, a, b in ranges])
        return ArraySource(images, labels)


def _minival(holdout_percent: int) -> dict[str, str]:
    """The held-out slice of the training set that selects the learning rate
    (the paper's App. B.1.1: 2% of CIFAR, 1% of ImageNet, 10% of pets and flowers)."""
    keep = 100 - holdout_percent
    return {"minitrain": f"train[:{keep}%]", "minival": f"train[{keep}%:]"}


_IMAGENET_FILES = "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org"

_TFDS_DATASETS = {
    "imagenet2012": TfdsDataset(
        "imagenet2012",
        1000,
        {"train": 1281167, "validation": 50000},
        aliases={"test": "validation", **_minival(1)},
        manual_download=_IMAGENET_FILES,
    ),
    # The ReaL labels (Beyer et al. 2020): a set of correct labels per validation image
    # (some have none); read as multi-hot, scored by evaluate.py.
    "imagenet2012_real": TfdsDataset(
        "imagenet2012_real",
        1000,
        {"validation": 50000},
        aliases={"test": "validation"},
        label_key="real_label",
        multi_label=True,
        manual_download=_IMAGENET_FILES,
    ),
    "cifar10": TfdsDataset(
        "cifar10",
        10,
        {"train": 50000, "test": 10000},
        aliases=_minival(2),
        image_shape=(32, 32, 3),
    ),
    "cifar100": TfdsDataset(
        "cifar100",
        100,
        {"train": 50000, "test": 10000},
        aliases=_minival(2),
        image_shape=(32, 32, 3),
    ),
    "oxford_iiit_pet": TfdsDataset(
        "oxford_iiit_pet",
        37,
        {"train": 3680, "test": 3669},
        aliases=_minival(10),
    ),
    "oxford_flowers102": TfdsDataset(
        "oxford_flowers102",
        102,
        {"train": 1020, "validation": 1020, "test": 6149},
        aliases=_minival(10),
    ),
    # Fashion-MNIST built by TFDS from local IDX files (see local.FashionMnistIdx).
    "fashion_mnist_idx": TfdsDataset(
        "fashion_mnist_idx",
        10,
        {"train": 60000, "test": 10000},
        image_shape=(28, 28, 1),
        manual_download="the four Fashion-MNIST IDX files",
        tfds_imports="vit_jax.data.local",
    ),
    "imagenet21k": TfdsDataset(
        "imagenet21k",
        21843,
        {"train": 14197122},
        aliases=_minival(1),
        user_supplied=(
            "ImageNet-21k is not in TFDS. Download the fall11 release from image-net.org and "
            "either extract it into class folders and use 'folder:PATH', or write a TFDS "
            "builder named 'imagenet21k' (one 'train' split, labels 0..21842) and import it "
            "before training."
        ),
    ),
    "jft": TfdsDataset(
        "jft",
        18291,
        {"train": 303_000_000},
        multi_label=True,
        label_key="labels",
        user_supplied=(
            "JFT-300M is Google-internal and not distributed. To pre-train on it (or on your "
            "own large multi-label set), supply a TFDS builder named 'jft' with 'image' and "
            "multi-label 'labels' features, import its module before training, and pass its "
            "data_dir."
        ),
    ),
}

_FASHION_MNIST_TFDS = TfdsDataset(
    "fashion_mnist", 10, {"train": 60000, "test": 10000}, image_shape=(28, 28, 1)
)


@functools.lru_cache(maxsize=4)
def _fashion_mnist_arrays(directory: str):
    return local.load_fashion_mnist_idx(directory)


def _fashion_mnist_idx_dir(data_dir: str | None) -> str | None:
    """The IDX folder to read, or None for TFDS's fashion_mnist."""
    for candidate in (data_dir, local.DEBIAN_FASHION_MNIST_DIR if data_dir is None else None):
        if local.has_idx_files(candidate):
            return candidate
    return None


def _fashion_mnist(data_dir: str | None):
    directory = _fashion_mnist_idx_dir(data_dir)
    if directory is None:
        return _FASHION_MNIST_TFDS
    return InMemoryDataset(lambda _: _fashion_mnist_arrays(directory), 10, None, (28, 28, 1))


_DIGITS = InMemoryDataset(
    lambda _: _digits_arrays(),
    10,
    {"train": 1797 - local.DIGITS_TEST_SIZE, "test": local.DIGITS_TEST_SIZE},
    (8, 8, 1),
)


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    return local.load_digits()


_CLASS_SUBSET = re.compile(r"(?P<parent>.+)/classes_(?P<first>\d+)-(?P<last>\d+)")
_CLASS_SUBSET_HINT = (
    "An in-memory dataset (digits, fashion_mnist from IDX files) also takes "
    "'/classes_A-B' for the classes A..B, e.g. 'fashion_mnist/classes_0-4'."
)


def _class_subset(parent_name: str, first: int, last: int, data_dir: str | None):
    """The classes first..last of the in-memory dataset `parent_name`, relabelled from 0."""
    parent = lookup(parent_name, data_dir)
    if not isinstance(parent, InMemoryDataset):
        raise UserError(
            f"'{parent_name}/classes_{first}-{last}': class subsets are made of in-memory "
            f"datasets (digits, fashion_mnist from IDX files), and {parent_name!r} is not one"
            + (
                "; pass the folder of the Fashion-MNIST IDX files as data_dir."
                if parent_name == "fashion_mnist"
                else "."
            )
        )
    if not first <= last < parent.num_classes:
        raise UserError(
            f"'{parent_name}/classes_{first}-{last}': the range must be A <= B < "
            f"{parent.num_classes} ({parent_name!r} has classes 0..{parent.num_classes - 1})."
        )

    def load(directory):
        subset = {}
        for split, (images, labels) in parent.load(directory).items():
            keep = (labels >= first) & (labels <= last)
            subset[split] = (images[keep], labels[keep] - first)
        return subset

    # Split sizes are counted from the data: the parent's hold every class.
    return InMemoryDataset(load, last - first + 1, None, parent.image_shape)


def known_names() -> list[str]:
    """All registered names ('folder:PATH' stands for any folder)."""
    names = ["digits", "fashion_mnist", *_TFDS_DATASETS, *(f"vtab/{t}" for t in VTAB_TASKS)]
    return names + ["folder:PATH"]


def lookup(name: str, data_dir: str | None = None):
    """The dataset object behind `name` (TfdsDataset, InMemoryDataset or FolderDataset)."""
    if name == "digits":
        return _DIGITS
    if name == "fashion_mnist":
        return _fashion_mnist(data_dir)
    if name.startswith("folder:"):
        return scan_folder(name[len("folder:") :])
    if name.startswith("vtab/") and name[5:] in VTAB_TASKS:
        return VTAB_TASKS[name[5:]]
    if name in _TFDS_DATASETS:
        return _TFDS_DATASETS[name]
    subset = _CLASS_SUBSET.fullmatch(name)
    if subset:
        first, last = int(subset["first"]), int(subset["last"])
        return _class_subset(subset["parent"], first, last, data_dir)
    known = known_names()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise UserError(
        f"Unknown dataset {name!r}.{hint} Known datasets: {', '.join(known)}. " + _CLASS_SUBSET_HINT
    )


def get_dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
    """Name, class count, split sizes and native image shape of a dataset."""
    return lookup(name, data_dir).info(name)


def num_examples(name: str, split: str, data_dir: str | None = None) -> int:
    """Examples in `split` of `name`; TFDS slicing ('train[:90%]') and aliases resolve."""
    dataset = lookup(name, data_dir)
    if isinstance(dataset, TfdsDataset):
        return dataset.resolve(split)[1]
    with reraised_as_user_error():
        return count_examples(split, dataset.info(name).splits)

"""Every registered dataset name resolves to a TFDS builder (or local loader), its splits
and its class count; unknown or missing datasets fail with a message saying what to do."""

import pytest
import tensorflow_datasets as tfds

from vit_jax import data
from vit_jax.data.registry import lookup
from vit_jax.data.tfds_dataset import TfdsDataset

# name -> (num_classes, {split: examples}) for the paper's datasets.
EXPECTED = {
    "digits": (10, {"train": 1437, "test": 360}),
    "imagenet2012": (1000, {"train": 1281167, "test": 50000, "minival": 12812}),
    "imagenet2012_real": (1000, {"validation": 50000}),
    "cifar10": (10, {"train": 50000, "test": 10000, "minival": 1000}),
    "cifar100": (100, {"train": 50000, "test": 10000, "minival": 1000}),
    "oxford_iiit_pet": (37, {"train": 3680, "test": 3669, "minival": 368}),
    "oxford_flowers102": (102, {"train": 1020, "test": 6149, "minival": 102}),
    "fashion_mnist_idx": (10, {"train": 60000, "test": 10000}),
}

# VTAB-1k: class count and test-split size of each task (Zhai et al. 2019, Table 5).
VTAB = {
    "caltech101": (102, 6084),
    "cifar100": (100, 10000),
    "dtd": (47, 1880),
    "oxford_flowers102": (102, 6149),
    "oxford_iiit_pet": (37, 3669),
    "sun397": (397, 21750),
    "svhn": (10, 26032),
    "patch_camelyon": (2, 32768),
    "eurosat": (10, 5400),
    "resisc45": (45, 6300),
    "diabetic_retinopathy": (5, 42670),
    "clevr_count": (8, 15000),
    "clevr_distance": (6, 15000),
    "dmlab": (6, 22735),
    "dsprites_location": (16, 73728),
    "dsprites_orientation": (16, 73728),
    "kitti_distance": (4, 711),
    "smallnorb_azimuth": (18, 12150),
    "smallnorb_elevation": (9, 12150),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_paper_datasets(name):
    num_classes, splits = EXPECTED[name]
    info = data.get_dataset_info(name)
    assert info.num_classes == num_classes
    assert {s: info.splits[s] for s in splits} == splits


def test_vtab_has_all_19_tasks_in_three_groups():
    assert len(data.VTAB_TASKS) == 19
    assert sorted(t for group in data.VTAB_GROUPS.values() for t in group) == sorted(VTAB)


@pytest.mark.parametrize("task", sorted(VTAB))
def test_vtab_task(task):
    num_classes, test_size = VTAB[task]
    info = data.get_dataset_info(f"vtab/{task}")
    assert info.num_classes == num_classes
    assert info.splits == {
        "train800": 800,
        "val200": 200,
        "train800val200": 1000,
        "test": test_size,
    }
    # The 1000 training examples are 800 + 200 distinct ones.
    spec = lookup(f"vtab/{task}")
    train, val = spec.aliases["train800"], spec.aliases["val200"]
    assert spec.aliases["train800val200"] == f"{train}+{val}"


def _tfds_specs():
    names = [n for n in data.known_names() if n != "folder:PATH"]
    return [(n, lookup(n)) for n in names if isinstance(lookup(n), TfdsDataset)]


@pytest.mark.parametrize("name,spec", _tfds_specs(), ids=[n for n, _ in _tfds_specs()])
def test_tfds_builder_exists_with_the_features_used(name, spec):
    if spec.user_supplied:
        with pytest.raises(data.DatasetNotPreparedError, match="builder named"):
            spec.open("train", data_dir=None)
        return
    if spec.tfds_imports:
        __import__(spec.tfds_imports)
    builder = tfds.builder(spec.tfds_name)
    features = builder.info.features
    assert "image" in features
    if spec.to_example is None:
        label = features[spec.label_key]
        label = getattr(label, "feature", label)  # multi-label: a Sequence of ClassLabel
        assert label.num_classes == spec.num_classes, name
    else:
        for path, num_classes in LABEL_MAP_FEATURES[name.removeprefix("vtab/")].items():
            feature = features
            for key in path.split("/"):
                feature = feature[key]
            if num_classes is not None:
                assert feature.num_classes == num_classes, path


# The TFDS features each VTAB label map reads (and their class counts where binned).
LABEL_MAP_FEATURES = {
    "clevr_count": {"objects/size": None},
    "clevr_distance": {"objects/pixel_coords": None},
    "dsprites_location": {"label_x_position": 32},
    "dsprites_orientation": {"label_orientation": 40},
    "kitti_distance": {"objects/type": None, "objects/location": None},
    "smallnorb_azimuth": {"label_azimuth": 18},
    "smallnorb_elevation": {"label_elevation": 9},
}


def test_slicing_resolves_like_tfds():
    assert data.num_examples("cifar10", "train[:98%]") == 49000
    assert data.num_examples("cifar10", "train[:10]+test[-5:]") == 15
    assert data.num_examples("digits", "train[:50%]") == 718
    with pytest.raises(ValueError, match="this dataset has splits"):
        data.num_examples("digits", "validation")


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"Did you mean 'cifar10'.*Known datasets: digits"):
        data.get_dataset_info("cifar_10")


def test_missing_tfds_dataset_gives_the_prepare_command(tmp_path):
    with pytest.raises(data.DatasetNotPreparedError) as error:
        data.get_iterator(
            "cifar10",
            "train",
            batch_size=8,
            preprocess="",
            data_dir=str(tmp_path),
            process_index=0,
            process_count=1,
        )
    assert f"tfds build cifar10 --data_dir={tmp_path}" in str(error.value)
    with pytest.raises(data.DatasetNotPreparedError) as error:
        lookup("imagenet2012").open("train", str(tmp_path))
    assert f"--manual_dir={tmp_path}/downloads/manual" in str(error.value)
    assert "ILSVRC2012_img_train.tar" in str(error.value)


def test_jft_says_the_user_must_supply_it():
    with pytest.raises(data.DatasetNotPreparedError, match="JFT-300M is Google-internal"):
        data.get_iterator(
            "jft", "train", batch_size=8, preprocess="", process_index=0, process_count=1
        )

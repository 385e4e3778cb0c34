"""The 19 VTAB-1k tasks (Zhai et al. 2019) as TFDS datasets with VTAB's splits and label maps.

Every task has train800 / val200 / train800val200 (1000 examples) and test. train800
and val200 are the first 800 / 200 examples of VTAB's own 'train' and 'val' splits,
which are carved out of the TFDS splits as in google-research/task_adaptation (e.g.
CIFAR-100: train = train[:90%], val = train[90%:]). Label maps for the structured
tasks follow task_adaptation's definitions; images of grayscale tasks are tiled to
RGB (and dSprites' 0/1 pixels scaled to 0..255) as VTAB does.
"""

import numpy as np
import tensorflow as tf

from vit_jax.data.tfds_dataset import TfdsDataset


def _vtab_splits(train_start_of_val: str, val: str, test: str) -> dict[str, str]:
    """`train_start_of_val`: the TFDS split VTAB's 'train' is the head of; `val`: the
    expression whose first 200 examples make val200 (an absolute start index)."""
    return {
        "train800": f"{train_start_of_val}[:800]",
        "val200": val,
        "train800val200": f"{train_start_of_val}[:800]+{val}",
        "test": test,
    }


def _bucket(value: tf.Tensor, thresholds) -> tf.Tensor:
    """Index of the last threshold below `value` (task_adaptation's binning)."""
    thresholds = tf.constant(np.asarray(thresholds, np.float32))
    return tf.reduce_max(tf.where(thresholds - tf.cast(value, tf.float32) < 0))


def _to_rgb_0_255(image: tf.Tensor, scale: int = 1) -> tf.Tensor:
    return tf.tile(image * scale, [1, 1, 3])


def _clevr_count(record):
    # 3 to 10 objects per scene -> 8 classes.
    return {
        "image": record["image"],
        "label": tf.cast(tf.size(record["objects"]["size"]) - 3, tf.int64),
    }


def _clevr_distance(record):
    distance = tf.reduce_min(record["objects"]["pixel_coords"][:, 2])
    label = _bucket(distance, [0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])
    return {"image": record["image"], "label": label}


def _dsprites(attribute: str, source_classes: int, num_classes: int):
    factor = source_classes / num_classes  # merge neighbouring values into coarser bins

    def to_example(record):
        value = tf.cast(record[attribute], tf.float32)
        label = tf.cast(tf.math.floordiv(value, factor), tf.int64)
        return {"image": _to_rgb_0_255(record["image"], 255), "label": label}

    return to_example


def _kitti_closest_vehicle(record):
    # Car, Van, Truck are types 0-2; 'no vehicle' is its own class via the 1000 m sentinel.
    objects = record["objects"]
    vehicles = tf.where(objects["type"] < 3)
    depth = tf.gather(objects["location"][:, 2], vehicles)
    depth = tf.concat([depth, tf.constant([[1000.0]])], axis=0)
    label = _bucket(tf.reduce_min(depth), [-100.0, 8.0, 20.0, 999.0])
    return {"image": record["image"], "label": label}


def _smallnorb(attribute: str):
    return lambda record: {"image": _to_rgb_0_255(record["image"]), "label": record[attribute]}


def _task(tfds_name, num_classes, tfds_splits, splits, **kwargs) -> TfdsDataset:
    return TfdsDataset(
        tfds_name, num_classes, tfds_splits, aliases=splits, list_tfds_splits=False, **kwargs
    )


_RETINOPATHY_FILES = (
    "the Kaggle Diabetic Retinopathy Detection files (kaggle.com/c/diabetic-retinopathy-detection)"
)
_RESISC_FILES = "NWPU-RESISC45.rar (see the TFDS resisc45 page)"

VTAB_TASKS: dict[str, TfdsDataset] = {
    # Natural
    "caltech101": _task(
        "caltech101",
        102,
        {"train": 3060, "test": 6084},
        _vtab_splits("train", "train[2754:2954]", "test"),
    ),
    "cifar100": _task(
        "cifar100",
        100,
        {"train": 50000, "test": 10000},
        _vtab_splits("train", "train[45000:45200]", "test"),
        image_shape=(32, 32, 3),
    ),
    "dtd": _task(
        "dtd",
        47,
        {"train": 1880, "validation": 1880, "test": 1880},
        _vtab_splits("train", "validation[:200]", "test"),
    ),
    "oxford_flowers102": _task(
        "oxford_flowers102",
        102,
        {"train": 1020, "validation": 1020, "test": 6149},
        _vtab_splits("train", "validation[:200]", "test"),
    ),
    "oxford_iiit_pet": _task(
        "oxford_iiit_pet",
        37,
        {"train": 3680, "test": 3669},
        _vtab_splits("train", "train[2944:3144]", "test"),
    ),
    "sun397": _task(
        "sun397/tfds",
        397,
        {"train": 76128, "validation": 10875, "test": 21750},
        _vtab_splits("train", "validation[:200]", "test"),
    ),
    "svhn": _task(
        "svhn_cropped",
        10,
        {"train": 73257, "test": 26032, "extra": 531131},
        _vtab_splits("train", "train[65931:66131]", "test"),
        image_shape=(32, 32, 3),
    ),
    # Specialized
    "patch_camelyon": _task(
        "patch_camelyon",
        2,
        {"train": 262144, "validation": 32768, "test": 32768},
        _vtab_splits("train", "validation[:200]", "test"),
        image_shape=(96, 96, 3),
    ),
    "eurosat": _task(
        "eurosat/rgb",
        10,
        {"train": 27000},
        _vtab_splits("train", "train[16200:16400]", "train[80%:]"),
        image_shape=(64, 64, 3),
    ),
    "resisc45": _task(
        "resisc45",
        45,
        {"train": 31500},
        _vtab_splits("train", "train[18900:19100]", "train[80%:]"),
        image_shape=(256, 256, 3),
        manual_download=_RESISC_FILES,
    ),
    "diabetic_retinopathy": _task(
        "diabetic_retinopathy_detection/btgraham-300",
        5,
        {"train": 35126, "validation": 10906, "test": 42670},
        _vtab_splits("train", "validation[:200]", "test"),
        image_shape=(300, 300, 3),
        manual_download=_RETINOPATHY_FILES,
    ),
    # Structured
    "clevr_count": _task(
        "clevr",
        8,
        {"train": 70000, "validation": 15000, "test": 15000},
        _vtab_splits("train", "train[63000:63200]", "validation"),
        image_shape=(320, 480, 3),
        to_example=_clevr_count,
    ),
    "clevr_distance": _task(
        "clevr",
        6,
        {"train": 70000, "validation": 15000, "test": 15000},
        _vtab_splits("train", "train[63000:63200]", "validation"),
        image_shape=(320, 480, 3),
        to_example=_clevr_distance,
    ),
    "dmlab": _task(
        "dmlab",
        6,
        {"train": 65550, "validation": 22628, "test": 22735},
        _vtab_splits("train", "validation[:200]", "test"),
        image_shape=(360, 480, 3),
    ),
    "dsprites_location": _task(
        "dsprites",
        16,
        {"train": 737280},
        _vtab_splits("train", "train[589824:590024]", "train[90%:]"),
        image_shape=(64, 64, 3),
        to_example=_dsprites("label_x_position", 32, 16),
    ),
    "dsprites_orientation": _task(
        "dsprites",
        16,
        {"train": 737280},
        _vtab_splits("train", "train[589824:590024]", "train[90%:]"),
        image_shape=(64, 64, 3),
        to_example=_dsprites("label_orientation", 40, 16),
    ),
    "kitti_distance": _task(
        "kitti",
        4,
        {"train": 6347, "validation": 423, "test": 711},
        _vtab_splits("train", "validation[:200]", "test"),
        to_example=_kitti_closest_vehicle,
    ),
    "smallnorb_azimuth": _task(
        "smallnorb",
        18,
        {"train": 24300, "test": 24300},
        _vtab_splits("train", "test[:200]", "test[50%:]"),
        image_shape=(96, 96, 3),
        to_example=_smallnorb("label_azimuth"),
    ),
    "smallnorb_elevation": _task(
        "smallnorb",
        9,
        {"train": 24300, "test": 24300},
        _vtab_splits("train", "test[:200]", "test[50%:]"),
        image_shape=(96, 96, 3),
        to_example=_smallnorb("label_elevation"),
    ),
}

VTAB_GROUPS = {
    "natural": (
        "caltech101",
        "cifar100",
        "dtd",
        "oxford_flowers102",
        "oxford_iiit_pet",
        "sun397",
        "svhn",
    ),
    "specialized": ("patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"),
    "structured": (
        "clevr_count",
        "clevr_distance",
        "dmlab",
        "dsprites_location",
        "dsprites_orientation",
        "kitti_distance",
        "smallnorb_azimuth",
        "smallnorb_elevation",
    ),
}


# Training augmentation, as the VTAB protocol the paper follows (App. B.1.1;
# Kolesnikov et al. 2020, Sec. 3.3): random crops and flips, left out where they
# destroy the label (object orientation, coordinates in the frame, counts).
# Task → why a random crop (the Inception crop keeps 5-100% of the frame and
# rescales it) changes the label.
CROP_CHANGES_LABEL = {
    "clevr_count": "it cuts objects out of the scene, and the label counts them",
    "clevr_distance": "it can cut out the closest object and rescales apparent depth",
    "dmlab": "the label is the distance to an object (and its kind): it can be cut out",
    "dsprites_location": "the label is the shape's x position in the frame",
    "dsprites_orientation": "it can cut out the small shape whose angle is the label",
    "kitti_distance": "it can cut out the closest vehicle and rescales apparent depth",
    "smallnorb_azimuth": "the pose is read from the whole object, which it cuts and moves",
    "smallnorb_elevation": "the camera elevation shows in the object's place and shape",
}
# Task → why a horizontal flip changes the label.
FLIP_CHANGES_LABEL = {
    "svhn": "a mirrored digit is not that digit",
    "dsprites_location": "it mirrors the x position",
    "dsprites_orientation": "it mirrors the angle",
    "smallnorb_azimuth": "it mirrors the azimuth",
}


def train_recipe(task: str) -> str:
    """The fine-tuning preprocessing recipe (vit_jax.data.RECIPES) of `task`:
    Inception crop and flip, less what changes the task's label."""
    if task not in VTAB_TASKS:
        raise ValueError(f"Unknown VTAB task {task!r}; known: {', '.join(VTAB_TASKS)}.")
    crop, flip = task not in CROP_CHANGES_LABEL, task not in FLIP_CHANGES_LABEL
    return {
        (True, True): "finetune",
        (True, False): "finetune_no_flip",
        (False, True): "finetune_no_crop",
        (False, False): "finetune_eval",  # Resize only: the evaluation recipe.
    }[crop, flip]

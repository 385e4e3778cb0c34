"""Input pipelines: datasets by name, preprocessing strings, deterministic sharded batches.

    from vit_jax import data
    info = data.get_dataset_info("cifar10")            # .num_classes, .splits, .image_shape
    batches = data.get_iterator("cifar10", "train", batch_size=512,
                                preprocess=data.recipe("finetune", 384), seed=0)
    for batch in data.prefetch_to_device(batches, 2, sharding): ...

See docs/data.md for the dataset names, splits, preprocessing ops and preparing data.
"""

from vit_jax.data.pipeline import (
    BatchIterator,
    OpenedSplit,
    get_iterator,
    open_split,
    prefetch_to_device,
)
from vit_jax.data.preprocess import RECIPES, recipe
from vit_jax.data.registry import get_dataset_info, known_names, num_examples
from vit_jax.data.tfds_dataset import DatasetInfo, DatasetNotPreparedError
from vit_jax.data.vtab import VTAB_GROUPS, VTAB_TASKS

__all__ = [
    "RECIPES",
    "VTAB_GROUPS",
    "VTAB_TASKS",
    "BatchIterator",
    "DatasetInfo",
    "DatasetNotPreparedError",
    "OpenedSplit",
    "get_dataset_info",
    "get_iterator",
    "known_names",
    "num_examples",
    "open_split",
    "prefetch_to_device",
    "recipe",
]

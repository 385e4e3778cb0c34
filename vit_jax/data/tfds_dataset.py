"""A dataset that lives in TFDS: its split sizes, split aliases, label key and how to prepare it."""

import dataclasses
import os
from collections.abc import Callable

import tensorflow_datasets as tfds

from vit_jax.data.sources import TfdsSource
from vit_jax.data.splits import count_examples
from vit_jax.errors import UserError, reraised_as_user_error

DEFAULT_DATA_DIR = "~/tensorflow_datasets"


class DatasetNotPreparedError(UserError, FileNotFoundError):
    """The dataset's files are not on disk; the message says how to prepare them."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    splits: dict[str, int]  # split name -> number of examples
    image_shape: tuple[int, int, int] | None  # native (H, W, C); None when it varies
    multi_label: bool = False


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
    """A TFDS builder plus what the paper's protocols need on top of it.

    `tfds_splits` are the builder's own splits with their sizes (known here so that
    `get_dataset_info` works before anything is downloaded); `aliases` name derived
    splits (VTAB's train800, the paper's minival) as TFDS split expressions.
    """

    tfds_name: str
    num_classes: int
    tfds_splits: dict[str, int]
    aliases: dict[str, str] = dataclasses.field(default_factory=dict)
    image_shape: tuple[int, int, int] | None = None
    label_key: str = "label"
    multi_label: bool = False
    # Maps a decoded TFDS record to {'image', 'label'}; None keeps the image encoded.
    to_example: Callable[[dict], dict] | None = None
    manual_download: str | None = None  # where the files come from when TFDS cannot fetch them
    user_supplied: str | None = None  # set for builders TFDS does not ship (JFT-300M)
    tfds_imports: str | None = None  # module that registers a builder outside TFDS
    list_tfds_splits: bool = True  # False: only the aliases are this dataset's splits (VTAB)

    def info(self, name: str) -> DatasetInfo:
        splits = dict(self.tfds_splits) if self.list_tfds_splits else {}
        with reraised_as_user_error():
            splits.update(
                {alias: count_examples(e, self.tfds_splits) for alias, e in self.aliases.items()}
            )
        return DatasetInfo(name, self.num_classes, splits, self.image_shape, self.multi_label)

    def resolve(self, split: str) -> tuple[str, int]:
        """(TFDS split expression, number of examples) for one of our split names."""
        expression = self.aliases.get(split, split)
        with reraised_as_user_error():
            return expression, count_examples(expression, self.tfds_splits)

    def open(self, split: str, data_dir: str | None) -> TfdsSource:
        expression, _ = self.resolve(split)
        builder = self._prepared_builder(data_dir)
        num_examples = builder.info.splits[expression].num_examples  # the files on disk
        if self.to_example is not None:
            return TfdsSource(builder, expression, num_examples, self.to_example, True)
        label_key = self.label_key
        to_example = lambda record: {"image": record["image"], "label": record[label_key]}
        return TfdsSource(builder, expression, num_examples, to_example, False)

    def _prepared_builder(self, data_dir: str | None):
        try:
            builder = tfds.builder(self.tfds_name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            if not self.user_supplied:
                raise
            raise DatasetNotPreparedError(self.user_supplied) from None
        if not builder.is_prepared():
            raise DatasetNotPreparedError(self.prepare_instructions(data_dir))
        return builder

    def prepare_instructions(self, data_dir: str | None) -> str:
        data_dir = data_dir or DEFAULT_DATA_DIR
        manual_dir = os.path.join(data_dir, "downloads", "manual")
        command = "tfds build"
        if self.tfds_imports:
            command += f" --imports {self.tfds_imports}"
        command += f" {self.tfds_name} --data_dir={data_dir}"
        if self.manual_download:
            command += f" --manual_dir={manual_dir}"
            where = f"First download {self.manual_download} into {manual_dir}, then run:"
        else:
            where = (
                "Run (on a machine with network access; copy the data_dir over if this one "
                "has none):"
            )
        return (
            f"TFDS dataset {self.tfds_name!r} is not prepared in {data_dir}. {where}\n"
            f"  {command}\nand pass that data_dir (--config.data_dir to training, --data_dir "
            "to evaluate and infer)."
        )

"""Where examples come from: random-access sources (in memory, files) and TFDS streams.

A random-access source reads example `index` inside a tf.data graph, which lets the
pipeline address any position of the shuffled stream directly (exact resume, disjoint
process shards, no replay). A TFDS source is a sequential stream of records.
"""

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from vit_jax.errors import UserError


@dataclasses.dataclass
class ArraySource:
    """Decoded images and labels held in memory (digits, Fashion-MNIST IDX files)."""

    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise UserError(f"{len(self.images)} images but {len(self.labels)} labels.")
        self._images = tf.constant(self.images)
        self._labels = tf.constant(self.labels, tf.int64)

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def read(self, index: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"image": tf.gather(self._images, index), "label": tf.gather(self._labels, index)}


@dataclasses.dataclass
class FileSource:
    """Encoded image files on disk (JPEG/PNG/GIF/BMP); decoding is the `decode` op's job."""

    paths: list[str]
    labels: np.ndarray  # (N,) int64

    def __post_init__(self):
        if len(self.paths) != len(self.labels):
            raise UserError(f"{len(self.paths)} files but {len(self.labels)} labels.")
        self._paths = tf.constant(self.paths or [""], tf.string)
        self._labels = tf.constant(self.labels, tf.int64)

    @property
    def num_examples(self) -> int:
        return len(self.paths)

    def read(self, index: tf.Tensor) -> dict[str, tf.Tensor]:
        path = tf.gather(self._paths, index)
        return {"image": tf.io.read_file(path), "label": tf.gather(self._labels, index)}


@dataclasses.dataclass
class TfdsSource:
    """A prepared TFDS dataset, read sequentially.

    `to_example` maps one raw TFDS record to {'image', 'label'} (VTAB's label maps live
    there); images stay encoded when `decode_images` is False so that the `decode` op
    (and caching of small datasets) works on compact bytes.
    """

    builder: object  # tfds.core.DatasetBuilder
    split: str
    num_examples: int
    to_example: Callable[[dict], dict]
    decode_images: bool = False

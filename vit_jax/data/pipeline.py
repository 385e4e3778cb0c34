"""Batches for training and evaluation, deterministic in (seed, step), sharded by process.

The stream is defined globally: training step s consumes positions [s*B, (s+1)*B) of an
endless sequence of examples (B = global batch), and process p reads its slice
[s*B + p*b, s*B + (p+1)*b) (b = B / process_count). Random preprocessing of the example
at position q is keyed on (seed, q). Two readers of that sequence:

* Random-access sources (digits, IDX files, image folders): position q is example
  index_shuffle(q mod N, key=(seed, q div N)), a fresh permutation per epoch computed
  per element. Resuming at step k starts at position k*B directly, with no replay, and
  the shuffle is global (not a buffer); the same batches come out for any process count.
* TFDS (large record files): each process reads its own part of the split
  (tfds.even_splits), file order and a shuffle buffer keyed on the seed. Resume at step
  k skips k*b records of that stream (reading, not decoding, them), which is exact for a
  fixed process count.
"""

import collections
import dataclasses
import itertools
import logging
import re
from collections.abc import Callable

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax.data import preprocess as pp
from vit_jax.data.registry import lookup
from vit_jax.data.sources import TfdsSource
from vit_jax.errors import UserError, reraised_as_user_error

# Small TFDS splits are cached in memory (as encoded bytes) after the first epoch.
CACHE_MAX_EXAMPLES = 150_000
_RNG_STREAM = 0x5EED  # separates preprocessing keys from the shuffle keys


class BatchIterator:
    """Yields dicts of numpy arrays; `num_batches` (and len()) is set for evaluation only."""

    def __init__(
        self, dataset: tf.data.Dataset, num_batches: int | None, source, preprocess: str = ""
    ):
        self._iterator = dataset.as_numpy_iterator()
        self.num_batches = num_batches
        self._source = source
        self._preprocess = preprocess
        self._train = num_batches is None

    def __iter__(self):
        return self

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("A training iterator repeats forever; it has no length.")
        return self.num_batches

    def __next__(self) -> dict[str, np.ndarray]:
        try:
            return next(self._iterator)
        except tf.errors.InvalidArgumentError as error:
            raise UserError(self._explain(error)) from None

    def _explain(self, error: tf.errors.InvalidArgumentError) -> str:
        message = error.message.strip().splitlines()[0]
        assertion = re.search(r"assertion failed: \[(.*?)\].*?\[x \(.*?\) = \] \[(.*?)\]", message)
        if assertion:  # a label check of the onehot op
            text, value = assertion.groups()
            return f"{text.replace(chr(92), '')} Got label {value}."
        shapes = re.search(r"Shapes are: \[tensor\]: \[(.*?)\], \[batch\]: \[(.*?)\]", message)
        if shapes:  # images of different sizes and no resize to one size
            field = "config.pp_train" if self._train else "config.pp_eval (or --preprocess)"
            return (
                f"Images of different shapes reached the batch ([{shapes.group(1)}] and "
                f"[{shapes.group(2)}]): the preprocessing {self._preprocess!r} does not bring "
                f"them to one size. Add a resize to {field}, e.g. 'decode|resize(224)|...', "
                "or a crop to a fixed size such as inception_crop(224) or "
                "resize_small(256)|central_crop(224)."
            )
        explain = getattr(self._source, "explain_failure", None)
        return (explain and explain()) or f"Input pipeline failed: {message}"


def _process_layout(batch_size, process_index, process_count) -> tuple[int, int, int]:
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if batch_size <= 0 or batch_size % process_count:
        raise UserError(
            f"Global batch size {batch_size} must be a positive multiple of the process "
            f"count {process_count}; each process reads batch_size // process_count examples."
        )
    if not 0 <= process_index < process_count:
        raise UserError(f"process_index {process_index} outside [0, {process_count}).")
    return process_index, process_count, batch_size // process_count


def _positions(first_local: int, batch_size: int, local_batch: int, process_index: int):
    """Global stream positions of this process's examples, from its `first_local`-th on."""
    k = tf.data.Dataset.range(first_local, np.iinfo(np.int64).max)
    return k.map(
        lambda k: (k // local_batch) * batch_size + process_index * local_batch + k % local_batch
    )


def _example_seed(seed: int, position: tf.Tensor) -> tf.Tensor:
    key = tf.constant([seed, _RNG_STREAM], tf.int64)
    return tf.random.experimental.stateless_fold_in(key, position)


def _finish(example: dict) -> dict:
    """Keeps what the training loop consumes: the image, the labels and (eval) the mask."""
    return {k: example[k] for k in ("image", "labels", "mask") if k in example}


def _indexed_stream(source, preprocess_fn, *, seed, train, start_step, layout):
    batch_size, local_batch, process_index = layout
    n = source.num_examples
    if train:
        positions = _positions(start_step * local_batch, batch_size, local_batch, process_index)
        num_batches = None
    else:
        num_batches = -(-n // batch_size)  # ceil: every process runs the same number of steps
        positions = _positions(0, batch_size, local_batch, process_index).take(
            num_batches * local_batch
        )

    def read(position):
        if train:
            epoch_key = tf.stack([tf.constant(seed, tf.int64), position // n])
            index = tf.random.experimental.index_shuffle(position % n, epoch_key, n - 1)
        else:
            index = tf.minimum(position, n - 1)  # padding repeats the last example, mask 0
        example = source.read(index)
        example["_seed"] = _example_seed(seed, position)
        example = preprocess_fn(example)
        if not train:
            example["mask"] = tf.cast(position < n, tf.float32)
        return _finish(example)

    dataset = positions.map(read, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(local_batch, drop_remainder=True), num_batches


def _tfds_stream(
    source: TfdsSource,
    preprocess_fn,
    *,
    seed,
    train,
    start_step,
    layout,
    process_count,
    shuffle_buffer,
):
    batch_size, local_batch, process_index = layout
    parts = tfds.even_splits(source.split, process_count)
    split = parts[process_index]
    decoders = None if source.decode_images else {"image": tfds.decode.SkipDecoding()}
    # Shuffling is this pipeline's job, also for datasets TFDS stores in a fixed order.
    read_config = tfds.ReadConfig(
        shuffle_seed=seed, try_autocache=False, enable_ordering_guard=False
    )
    records = source.builder.as_dataset(
        split=split, shuffle_files=train, read_config=read_config, decoders=decoders
    )
    examples = records.map(source.to_example, num_parallel_calls=tf.data.AUTOTUNE)
    local_sizes = [source.builder.info.splits[p].num_examples for p in parts]
    if min(local_sizes) == 0:
        raise UserError(
            f"Split {source.split!r} has fewer examples than processes ({process_count})."
        )
    if train and local_sizes[process_index] <= CACHE_MAX_EXAMPLES:
        examples = examples.cache()

    if train:
        examples = examples.repeat().shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
        first = start_step * local_batch
        counted = examples.enumerate().skip(first)
        num_batches = None
    else:
        num_batches = -(-max(local_sizes) // local_batch)
        real = examples.map(lambda ex: {**ex, "mask": tf.constant(1.0)})
        padding = examples.take(1).map(lambda ex: {**ex, "mask": tf.constant(0.0)}).repeat()
        counted = real.concatenate(padding).take(num_batches * local_batch).enumerate()

    def process(k, example):
        position = (k // local_batch) * batch_size + process_index * local_batch + k % local_batch
        example = {**example, "_seed": _example_seed(seed, position)}
        mask = example.pop("mask", None)
        example = preprocess_fn(example)
        if mask is not None:
            example["mask"] = mask
        return _finish(example)

    dataset = counted.map(process, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(local_batch, drop_remainder=True), num_batches


@dataclasses.dataclass(frozen=True)
class OpenedSplit:
    """A split whose dataset was found, whose files were checked and whose
    preprocessing was built: `batches` reads it from any step on. Opening
    first lets a caller fail on a missing dataset or a bad preprocessing
    string before long work, and position the stream once it knows the step."""

    name: str
    split: str
    source: object  # ArraySource, FileSource or TfdsSource
    preprocess: str  # The full op string, decode and onehot included.
    preprocess_fn: Callable

    def batches(
        self,
        *,
        batch_size: int,
        seed: int = 0,
        train: bool = True,
        start_step: int = 0,
        process_index: int | None = None,
        process_count: int | None = None,
        shuffle_buffer: int = 10_000,
    ) -> BatchIterator:
        """This process's batches; see `get_iterator`."""
        process_index, process_count, local_batch = _process_layout(
            batch_size, process_index, process_count
        )
        logging.info(
            "Dataset %s[%s]: %d examples, process %d/%d reads %d per step, preprocess %r.",
            self.name,
            self.split,
            self.source.num_examples,
            process_index,
            process_count,
            local_batch,
            self.preprocess,
        )
        layout = (batch_size, local_batch, process_index)
        common = dict(seed=seed, train=train, start_step=start_step, layout=layout)
        if isinstance(self.source, TfdsSource):
            stream, num_batches = _tfds_stream(
                self.source,
                self.preprocess_fn,
                **common,
                process_count=process_count,
                shuffle_buffer=shuffle_buffer,
            )
        else:
            stream, num_batches = _indexed_stream(self.source, self.preprocess_fn, **common)
        options = tf.data.Options()
        options.deterministic = True
        stream = stream.with_options(options).prefetch(tf.data.AUTOTUNE)
        return BatchIterator(stream, num_batches, self.source, self.preprocess)


def open_split(name: str, split: str, *, preprocess: str, data_dir: str | None = None):
    """`name`/`split` opened for reading with the `preprocess` op string (see
    preprocess.py); `decode` is prepended when absent, and `onehot(num_classes)`
    appended; a `onehot` without a depth gets the dataset's class count.
    Raises a UserError for an unknown or unprepared dataset, an unknown
    split, a bad op string or a onehot depth other than the class count."""
    dataset = lookup(name, data_dir)
    info = dataset.info(name)
    if not pp.has_op(preprocess, "decode"):  # file and TFDS images arrive encoded
        preprocess = f"decode|{preprocess}"
    if not pp.has_op(preprocess, "onehot"):
        preprocess = f"{preprocess}|onehot"
    for depth in pp.onehot_depths(preprocess):
        if depth is not None and depth != info.num_classes:
            raise UserError(
                f"{preprocess!r} encodes labels as onehot({depth}), but {name} has "
                f"{info.num_classes} classes: write onehot without a number to take the "
                "dataset's count."
            )
    preprocess = pp.with_onehot_depth(preprocess, info.num_classes)
    with reraised_as_user_error():
        preprocess_fn = pp.build(preprocess)
    return OpenedSplit(name, split, dataset.open(split, data_dir), preprocess, preprocess_fn)


def get_iterator(
    name: str,
    split: str,
    *,
    batch_size: int,
    preprocess: str,
    seed: int = 0,
    train: bool = True,
    start_step: int = 0,
    data_dir: str | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    shuffle_buffer: int = 10_000,
) -> BatchIterator:
    """This process's batches of `name`/`split`; see the module docstring for the order.

    `batch_size` is global. Batches are {'image': float32 (b, H, W, C), 'labels': float32
    (b, num_classes)} plus, when not training, 'mask' (1 real, 0 padding) with the last
    batch padded so every process runs `num_batches` steps. `preprocess` is an op string
    (see preprocess.py); `decode` is prepended when absent, and `onehot(num_classes)`
    appended.
    """
    opened = open_split(name, split, preprocess=preprocess, data_dir=data_dir)
    return opened.batches(
        batch_size=batch_size,
        seed=seed,
        train=train,
        start_step=start_step,
        process_index=process_index,
        process_count=process_count,
        shuffle_buffer=shuffle_buffer,
    )


def prefetch_to_device(iterator, size: int, sharding: jax.sharding.Sharding):
    """Yields global jax.Arrays built from each process's local batches, `size` ahead.

    The batch dimension is laid out by `sharding` (e.g. NamedSharding(mesh, P('data'))).
    Transfers are asynchronous, so keeping `size` batches queued overlaps them with compute.
    """

    def to_global(batch):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

    queue = collections.deque()

    def enqueue(n):
        for batch in itertools.islice(iterator, n):
            queue.append(to_global(batch))

    enqueue(size)
    while queue:
        yield queue.popleft()
        enqueue(1)

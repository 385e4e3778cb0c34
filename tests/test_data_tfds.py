"""Real TFDS machinery offline: a TFDS dataset built with download_and_prepare from
Fashion-MNIST-format IDX files written here, then read through the pipeline."""

import gzip
import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vit_jax import data
from vit_jax.data.local import FashionMnistIdx, read_idx

SIZES = {"train": 24, "test": 10}
PIXELS = "decode(1)|value_range(0, 255)"


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = (2051 if array.ndim == 3 else 2049).to_bytes(4, "big")
    dims = b"".join(d.to_bytes(4, "big") for d in array.shape)
    return magic + dims + array.astype(np.uint8).tobytes()


def write_fashion_idx(directory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train files gzipped (as distributed), test files raw (as Debian ships them)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = rng.integers(0, 256, (SIZES[split], 7, 7), np.uint8)
        labels = np.arange(SIZES[split]) % 10
        arrays[split] = (images, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = directory / f"{prefix}-{kind}-ubyte"
            if split == "train":
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(_idx_bytes(array)))
            else:
                path.write_bytes(_idx_bytes(array))
    return arrays


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    idx_dir = tmp_path_factory.mktemp("idx")
    arrays = write_fashion_idx(idx_dir)
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = FashionMnistIdx(data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(idx_dir))
    )
    return idx_dir, data_dir, arrays


def _iterator(data_dir, split="train", **kwargs):
    kwargs = {
        "batch_size": 8,
        "preprocess": PIXELS,
        "process_index": 0,
        "process_count": 1,
        **kwargs,
    }
    return data.get_iterator("fashion_mnist_idx", split, data_dir=data_dir, **kwargs)


def test_prepared_dataset_reads_back_the_idx_files_in_order(prepared):
    _, data_dir, arrays = prepared
    batches = list(_iterator(data_dir, "test", batch_size=4, train=False))
    assert len(batches) == 3
    images = np.concatenate([b["image"] for b in batches])[:10, ..., 0]
    masks = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(images, arrays["test"][0])
    np.testing.assert_array_equal(masks, [1.0] * 10 + [0.0] * 2)
    labels = np.concatenate([b["labels"] for b in batches])[:10].argmax(-1)
    np.testing.assert_array_equal(labels, arrays["test"][1])


def test_training_stream_is_deterministic_and_resumes_exactly(prepared):
    _, data_dir, _ = prepared
    augment = "decode(1)|inception_crop(5)|flip_lr|value_range(-1, 1)"
    run = lambda **kw: list(itertools.islice(_iterator(data_dir, preprocess=augment, **kw), 7))
    first, again = run(seed=2), run(seed=2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    resumed = list(
        itertools.islice(_iterator(data_dir, preprocess=augment, seed=2, start_step=4), 3)
    )
    for a, b in zip(first[4:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["labels"], b["labels"])


def test_process_shards_are_disjoint_and_cover_the_split(prepared):
    _, data_dir, arrays = prepared
    seen = []
    for process in (0, 1):
        batches = _iterator(data_dir, train=False, process_index=process, process_count=2)
        for batch in batches:
            seen += [
                img.tobytes()
                for img, m in zip(
                    batch["image"][..., 0].astype(np.uint8), batch["mask"], strict=True
                )
                if m
            ]
    expected = sorted(img.tobytes() for img in arrays["train"][0])
    assert sorted(seen) == expected


def test_fashion_mnist_reads_idx_files_from_data_dir(prepared):
    idx_dir, _, arrays = prepared
    info = data.get_dataset_info("fashion_mnist", data_dir=str(idx_dir))
    assert info.splits == SIZES and info.num_classes == 10 and info.image_shape == (28, 28, 1)
    batches = data.get_iterator(
        "fashion_mnist",
        "train[:8]",
        batch_size=8,
        preprocess=PIXELS,
        train=False,
        data_dir=str(idx_dir),
        process_index=0,
        process_count=1,
    )
    (batch,) = list(batches)
    np.testing.assert_array_equal(batch["image"][..., 0], arrays["train"][0][:8])


def test_unprepared_dataset_names_the_build_command(tmp_path):
    with pytest.raises(data.DatasetNotPreparedError) as error:
        _iterator(str(tmp_path))
    message = str(error.value)
    assert "tfds build --imports vit_jax.data.local fashion_mnist_idx" in message
    assert f"--data_dir={tmp_path} --manual_dir={tmp_path}/downloads/manual" in message


def test_idx_reader_rejects_other_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    with pytest.raises(ValueError, match="not a uint8 IDX file"):
        read_idx(tmp_path / "bad")

"""Determinism in (seed, step), exact resume, process sharding, eval padding, device prefetch."""

import itertools

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from test_data_folder import image_ids, write_id_folder

from vit_jax import data

AUGMENT = "inception_crop(8)|flip_lr|value_range(-1, 1)"  # random ops, so the seed matters
IDENTITY = "value_range(0, 255)"


def _batches(name="digits", n=6, **kwargs):
    kwargs = {
        "batch_size": 32,
        "preprocess": AUGMENT,
        "process_index": 0,
        "process_count": 1,
        **kwargs,
    }
    return list(itertools.islice(data.get_iterator(name, "train", **kwargs), n))


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_batches_have_the_contracted_layout():
    (batch,) = _batches(n=1)
    assert batch["image"].shape == (32, 8, 8, 1) and batch["image"].dtype == np.float32
    assert batch["labels"].shape == (32, 10) and batch["labels"].dtype == np.float32
    np.testing.assert_array_equal(batch["labels"].sum(-1), 1.0)
    assert -1.0 <= batch["image"].min() < batch["image"].max() <= 1.0


def test_same_seed_same_batches_other_seed_other_batches():
    first = _batches(seed=3)
    _assert_same(first, _batches(seed=3))
    other = _batches(seed=4)
    assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_resume_at_step_k_continues_the_same_stream():
    uninterrupted = _batches(n=8, seed=1)
    _assert_same(uninterrupted[5:], _batches(n=3, seed=1, start_step=5))


def test_each_epoch_is_a_new_permutation(tmp_path):
    write_id_folder(tmp_path, 40, 4)
    batches = _batches(f"folder:{tmp_path}", n=10, batch_size=8, preprocess=IDENTITY)
    epochs = [sum((image_ids(b) for b in batches[e * 5 : (e + 1) * 5]), []) for e in (0, 1)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(40))
    assert epochs[0] != epochs[1]


def test_two_processes_read_disjoint_halves_of_the_same_global_batches(tmp_path):
    write_id_folder(tmp_path, 40, 4)
    name = f"folder:{tmp_path}"
    kwargs = dict(n=5, batch_size=8, preprocess=IDENTITY, seed=7)
    whole = _batches(name, **kwargs)
    shards = [_batches(name, process_index=p, process_count=2, **kwargs) for p in (0, 1)]
    seen = [sum((image_ids(b) for b in shard), []) for shard in shards]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(40))
    for step in range(5):  # the global batch does not depend on the process count
        ids = image_ids(shards[0][step]) + image_ids(shards[1][step])
        assert ids == image_ids(whole[step])


def test_eval_is_one_ordered_padded_pass_of_equal_length_on_every_process(tmp_path):
    write_id_folder(tmp_path, 21, 3)
    name = f"folder:{tmp_path}"
    per_process = [
        data.get_iterator(
            name,
            "train",
            batch_size=8,
            preprocess=IDENTITY,
            train=False,
            process_index=p,
            process_count=2,
        )
        for p in (0, 1)
    ]
    assert [len(it) for it in per_process] == [3, 3]  # ceil(21 / 8)
    batches = [list(it) for it in per_process]
    real = []
    for step in range(3):
        for p in (0, 1):
            batch = batches[p][step]
            assert batch["image"].shape[0] == 4 and batch["mask"].dtype == np.float32
            real += [i for i, m in zip(image_ids(batch), batch["mask"], strict=True) if m]
    assert sorted(real) == list(range(21))
    assert sum(b["mask"].sum() for shard in batches for b in shard) == 21


def test_digits_eval_covers_the_test_split():
    batches = data.get_iterator(
        "digits",
        "test",
        batch_size=64,
        preprocess=IDENTITY,
        train=False,
        process_index=0,
        process_count=1,
    )
    assert batches.num_batches == 6
    masks = np.concatenate([b["mask"] for b in batches])
    assert masks.sum() == 360 and masks[:360].all() and not masks[360:].any()


def test_a_onehot_depth_other_than_the_class_count_is_an_error_naming_both():
    with pytest.raises(ValueError, match=r"onehot\(5\), but digits has 10 classes"):
        _batches(n=1, preprocess="value_range(-1, 1)|onehot(5)")
    (batch,) = _batches(n=1, preprocess="value_range(-1, 1)|onehot(smoothing=0.1)")
    assert batch["labels"].shape[-1] == 10  # Left out: the dataset's count.


def test_global_batch_must_divide_by_the_process_count():
    with pytest.raises(ValueError, match="multiple of the process count 3"):
        data.get_iterator(
            "digits", "train", batch_size=32, preprocess="", process_index=0, process_count=3
        )


def test_prefetch_to_device_assembles_sharded_global_arrays():
    devices = np.array(jax.devices())
    sharding = NamedSharding(Mesh(devices, ("data",)), PartitionSpec("data"))
    local = _batches(n=2, batch_size=16)
    batches = data.get_iterator(
        "digits", "train", batch_size=16, preprocess=AUGMENT, process_index=0, process_count=1
    )
    on_device = list(itertools.islice(data.prefetch_to_device(batches, 2, sharding), 2))
    for host, device in zip(local, on_device, strict=True):
        assert device["image"].sharding == sharding
        assert len(device["image"].addressable_shards) == len(devices)
        np.testing.assert_array_equal(np.asarray(device["image"]), host["image"])
        np.testing.assert_array_equal(np.asarray(device["labels"]), host["labels"])

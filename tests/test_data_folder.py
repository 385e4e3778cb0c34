"""The image-folder loader on JPEG/PNG files written here, one of them corrupt."""

import numpy as np
import pytest
from PIL import Image

from vit_jax import data
from vit_jax.errors import UserError


def write_id_folder(root, num_images: int, num_classes: int) -> None:
    """PNGs of constant value 5*i (i = image id) in class folders c0, c1, ...: the
    pixel value tells which example a batch row is."""
    for i in range(num_images):
        folder = root / f"c{i % num_classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 6, 3), 5 * i, np.uint8)).save(folder / f"{i:03d}.png")


def image_ids(batch) -> list[int]:
    """Inverts write_id_folder for a batch preprocessed with value_range(0, 255)."""
    return [round(v / 5) for v in batch["image"][:, 0, 0, 0]]


def _write_photos(root, corrupt: bool):
    rng = np.random.default_rng(0)
    for label, name in enumerate(("cat", "dog", "emu")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (12 + label, 10, 3), np.uint8)
            suffix = "jpg" if i % 2 else "png"
            Image.fromarray(pixels).save(root / name / f"{i}.{suffix}")
    if corrupt:
        (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def _read_all(name, split="train", preprocess="decode|resize(8)|value_range(0, 255)"):
    batches = data.get_iterator(
        name,
        split,
        batch_size=4,
        preprocess=preprocess,
        train=False,
        process_index=0,
        process_count=1,
    )
    return list(batches)


def test_reads_jpeg_and_png_class_folders(tmp_path):
    _write_photos(tmp_path, corrupt=False)
    info = data.get_dataset_info(f"folder:{tmp_path}")
    assert info.num_classes == 3 and info.splits == {"train": 12}
    batches = _read_all(f"folder:{tmp_path}")
    labels = np.concatenate([b["labels"][b["mask"] == 1] for b in batches])
    assert labels.shape == (12, 3)
    assert labels.sum(axis=0).tolist() == [4, 4, 4]
    assert batches[0]["image"].shape == (4, 8, 8, 3)


def test_slices_are_random_subsets_not_whole_classes(tmp_path):
    write_id_folder(tmp_path, 40, 4)
    head = _read_all(f"folder:{tmp_path}", "train[:50%]")
    labels = np.concatenate([b["labels"] for b in head]).argmax(-1)
    assert len(set(labels.tolist())) == 4


def test_split_subfolders(tmp_path):
    write_id_folder(tmp_path / "train", 12, 3)
    write_id_folder(tmp_path / "test", 6, 3)
    info = data.get_dataset_info(f"folder:{tmp_path}")
    assert info.splits == {"test": 6, "train": 12} and info.num_classes == 3


def test_corrupt_image_is_reported_with_its_path(tmp_path):
    _write_photos(tmp_path, corrupt=True)
    with pytest.raises(ValueError, match="corrupt or unreadable") as error:
        _read_all(f"folder:{tmp_path}")
    assert str(tmp_path / "dog" / "broken.jpg") in str(error.value)
    assert str(error.value).startswith("1 corrupt")  # only the broken file is named


def test_folder_errors_say_what_layout_is_expected(tmp_path):
    with pytest.raises(UserError, match="PATH/<class>/<image>"):
        data.get_dataset_info(f"folder:{tmp_path}/missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class sub-folders"):
        data.get_dataset_info(f"folder:{tmp_path}/empty")

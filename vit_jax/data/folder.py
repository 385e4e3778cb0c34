"""The user's own images: a folder with one sub-folder of images per class.

Two layouts are accepted:
  PATH/<class>/<image>                 one split, 'train' (slice it: 'train[:90%]')
  PATH/<split>/<class>/<image>         when PATH's sub-folders are split names
                                       (train, val, validation, test)
Class ids are the sorted class-folder names of the first split. Files of a split are
listed in sorted order and then permuted with a fixed seed, so that 'train[:90%]' and
'train[90%:]' are random, disjoint subsets rather than whole classes.
"""

import dataclasses
import functools
import logging
import os

import numpy as np

from vit_jax.data.sources import FileSource
from vit_jax.data.splits import resolve_split
from vit_jax.data.tfds_dataset import DatasetInfo
from vit_jax.errors import UserError, reraised_as_user_error

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
SPLIT_FOLDER_NAMES = ("train", "val", "validation", "test")
FILE_ORDER_SEED = 0


def _subfolders(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _images_in(path: str) -> list[str]:
    files = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        files += [
            os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return files


@dataclasses.dataclass(frozen=True)
class FolderDataset:
    path: str
    class_names: tuple[str, ...]
    files: dict[str, tuple[list[str], np.ndarray]]  # split -> (paths, labels)

    def info(self, name: str) -> DatasetInfo:
        splits = {split: len(paths) for split, (paths, _) in self.files.items()}
        return DatasetInfo(name, len(self.class_names), splits, None)

    def open(self, split: str, data_dir: str | None = None) -> "CheckedFileSource":
        del data_dir  # the path is part of the name
        sizes = {s: len(paths) for s, (paths, _) in self.files.items()}
        paths, labels = [], []
        with reraised_as_user_error():
            ranges = resolve_split(split, sizes)
        for name, start, stop in ranges:
            paths += self.files[name][0][start:stop]
            labels.append(self.files[name][1][start:stop])
        return CheckedFileSource(paths, np.concatenate(labels))


@functools.lru_cache(maxsize=8)
def scan_folder(path: str) -> FolderDataset:
    """Lists a class-folder dataset (cached: large folders take a while to walk)."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise UserError(
            f"Image folder {path} does not exist. 'folder:PATH' expects PATH/<class>/<image> "
            "or PATH/<split>/<class>/<image>."
        )
    top = _subfolders(path)
    split_dirs = [d for d in top if d in SPLIT_FOLDER_NAMES]
    if split_dirs and len(split_dirs) == len(top):
        roots = {d: os.path.join(path, d) for d in split_dirs}
    else:
        roots = {"train": path}
    first = roots["train"] if "train" in roots else next(iter(roots.values()))
    class_names = tuple(_subfolders(first))
    if not class_names:
        raise UserError(
            f"{first} has no class sub-folders. 'folder:PATH' expects one sub-folder of images "
            "per class, e.g. PATH/cat/1.jpg, PATH/dog/2.png."
        )
    files = {}
    for split, root in roots.items():
        unknown = sorted(set(_subfolders(root)) - set(class_names))
        if unknown:
            raise UserError(
                f"{root} has class folders {unknown} that {first} lacks; every split must use "
                f"the same classes ({', '.join(class_names)})."
            )
        paths, labels = [], []
        for label, name in enumerate(class_names):
            found = _images_in(os.path.join(root, name)) if os.path.isdir(f"{root}/{name}") else []
            paths += found
            labels += [label] * len(found)
        if not paths:
            raise UserError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {root}.")
        order = np.random.default_rng(FILE_ORDER_SEED).permutation(len(paths))
        files[split] = ([paths[i] for i in order], np.asarray(labels, np.int64)[order])
    return FolderDataset(path, class_names, files)


def unreadable_images(paths: list[str]) -> list[tuple[str, str]]:
    """(path, reason) for every file that is not a decodable image."""
    from PIL import Image

    bad = []
    for i, path in enumerate(paths):
        if i and i % 10000 == 0:
            logging.info("Checked %d/%d images for corruption.", i, len(paths))
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as error:  # PIL raises many types for bad files; report them all.
            bad.append((path, f"{type(error).__name__}: {error}"))
    return bad


class CheckedFileSource(FileSource):
    """A FileSource that, when decoding fails, finds and names the unreadable files."""

    def explain_failure(self) -> str | None:
        bad = unreadable_images(self.paths)
        if not bad:
            return None
        lines = "\n".join(f"  {path} ({reason})" for path, reason in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        return (
            f"{len(bad)} corrupt or unreadable image(s) in the folder dataset; delete or "
            f"replace them:\n{lines}{more}"
        )

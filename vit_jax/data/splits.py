"""TFDS split syntax ('train[:90%]+test[10:20]') resolved against known split sizes.

Used for datasets that do not live in TFDS (digits, IDX files, image folders) and to
count examples of any split without opening the data.
"""

from types import SimpleNamespace

import tensorflow_datasets as tfds

from vit_jax.errors import UserError


def resolve_split(split: str, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
    """[(split name, start, stop), ...] that `split` selects, TFDS's rounding included."""
    try:
        instruction = tfds.core.ReadInstruction.from_spec(split)
    except (ValueError, AssertionError) as error:
        raise UserError(
            f"Cannot parse split {split!r}: {error}. Use TFDS syntax such as 'train', "
            "'train[:90%]', 'train[:800]+validation[:200]'."
        ) from error
    unknown = sorted({name for name in _split_names(instruction)} - set(sizes))
    if unknown:
        raise UserError(
            f"Unknown split {', '.join(map(repr, unknown))} in {split!r}; "
            f"this dataset has splits {', '.join(sorted(sizes))}."
        )
    infos = {name: SimpleNamespace(num_examples=n) for name, n in sizes.items()}
    ranges = []
    for part in instruction.to_absolute(infos):
        size = sizes[part.splitname]
        start = 0 if part.from_ is None else part.from_
        stop = size if part.to is None else part.to
        ranges.append((part.splitname, start, stop))
    return ranges


def count_examples(split: str, sizes: dict[str, int]) -> int:
    return sum(stop - start for _, start, stop in resolve_split(split, sizes))


def _split_names(instruction) -> list[str]:
    # ReadInstruction is a tree of `+`; its leaves name the base splits.
    if hasattr(instruction, "split_name"):
        return [instruction.split_name]
    return _split_names(instruction.left) + _split_names(instruction.right)

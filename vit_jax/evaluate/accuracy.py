"""Top-1 accuracy on any split, and ImageNet ReaL accuracy (Beyer et al., 2020).

Both are one rule on (multi-)hot labels: a prediction is correct when the
top-scoring class is one of the image's positive labels. For ordinary
one-hot labels that is top-1 accuracy. ReaL gives each validation image the
set of labels raters found correct; images whose set is empty are skipped,
as the ReaL paper does, so they count neither as right nor as wrong.
"""

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vit_jax.errors import UserError


def correct_and_counted(logits, labels, mask=None):
    """Per example: (1 if the arg-max class is a positive label, 1 if the example counts).

    An example counts when it is real (mask 1, not batch padding) and has at
    least one positive label. Works on jax and numpy arrays, inside jit.
    """
    xp = jnp if isinstance(logits, jax.Array) else np
    predicted = xp.argmax(logits, axis=-1)
    hit = xp.take_along_axis(labels, predicted[:, None], axis=-1)[:, 0] > 0
    counted = xp.any(labels > 0, axis=-1)
    if mask is not None:
        counted = counted & (mask > 0)
    return (hit & counted).astype(xp.float32), counted.astype(xp.float32)


def multi_hot(label_sets: Iterable[Iterable[int]], num_classes: int) -> np.ndarray:
    """[[3], [], [1, 7]] → (3, num_classes) 0/1 rows; empty sets give zero rows."""
    label_sets = list(label_sets)
    rows = np.zeros((len(label_sets), num_classes), np.float32)
    for row, labels in zip(rows, label_sets, strict=True):
        row[list(labels)] = 1.0
    return rows


def accuracy(
    logits_fn: Callable, params, batches: Iterable[dict], log_every: int = 50
) -> dict[str, float]:
    """Accuracy of `logits_fn(params, images)` over batches of {'image', 'labels', 'mask'}.

    Returns {'accuracy', 'num_counted', 'num_skipped'}: skipped are real images
    without any positive label (ReaL's unlabelled ones).
    """
    correct = counted = seen = 0.0
    for step, batch in enumerate(batches, 1):
        logits = logits_fn(params, batch["image"])
        mask = batch.get("mask", np.ones(len(batch["labels"])))
        hit, count = correct_and_counted(np.asarray(logits), np.asarray(batch["labels"]), mask)
        correct, counted, seen = correct + hit.sum(), counted + count.sum(), seen + mask.sum()
        if log_every and step % log_every == 0:
            logging.info("batch %d: accuracy %.4f over %d images", step, correct / counted, counted)
    if not counted:
        raise UserError("no labelled example was evaluated: the split is empty or unlabelled.")
    return {
        "accuracy": float(correct / counted),
        "num_counted": int(counted),
        "num_skipped": int(seen - counted),
    }

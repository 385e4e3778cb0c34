"""What the trainer can learn, in one table: per objective (config.objective)
the model it trains, its training loss and metric, its evaluation counts and
what its batches hold.

'classification' learns the dataset's labels (Sec. 3, 4.1).
'masked_patch_prediction' is the self-supervised objective of Sec. 4.6 and
App. B.1.2: corrupt half the patches, predict each corrupted patch's 3-bit
mean colour; the labels are unused.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from vit_jax.evaluate.accuracy import correct_and_counted
from vit_jax.models import get_masked_patch_model, get_model
from vit_jax.models.mpp import masked_patch_loss

# Classification's losses (config.loss).
LOSSES = ("softmax_xent", "sigmoid_xent")


@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective. The functions are traced inside the trainer's jitted
    step and eval step; `config` is the run's config."""

    # (model_name, num_classes, options) → the Flax module this objective trains.
    build_model: Callable
    # (model, params, batch, config, rngs, train) → (mean loss, mean accuracy).
    loss_and_accuracy: Callable
    # (model, params, batch, config) → (correct, counted, loss sum) over the real
    # examples of an evaluation batch (batch["mask"] marks them).
    eval_counts: Callable
    # Whether batches carry labels, float32 (batch, num_classes) beside "image".
    uses_labels: bool
    # What the final console line calls the test accuracy.
    accuracy_name: str

    def abstract_batch(self, batch_size: int, image_shape, num_classes: int, sharding=None):
        """The shapes of a training batch (jax.ShapeDtypeStruct), for lowering a
        step without data: "image" (batch, H, W, C) and, when used, "labels"."""
        shapes = {"image": (batch_size, *image_shape)}
        if self.uses_labels:
            shapes["labels"] = (batch_size, num_classes)
        return {
            key: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)
            for key, shape in shapes.items()
        }


def classification_loss(logits, labels, kind: str, label_smoothing: float):
    """Mean over the batch of softmax or sigmoid cross-entropy with (optionally
    smoothed) one-hot or multi-hot float labels."""
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + label_smoothing / labels.shape[-1]
    if kind == "softmax_xent":
        return jnp.mean(optax.softmax_cross_entropy(logits, labels))
    # Sigmoid: summed over classes, as the official JFT code does.
    return jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels), axis=-1))


def _classification_loss_and_accuracy(model, params, batch, config, rngs, train):
    logits = model.apply({"params": params}, batch["image"], train=train, rngs=rngs)
    loss = classification_loss(logits, batch["labels"], config.loss, config.label_smoothing)
    correct, counted = correct_and_counted(logits, batch["labels"])
    return loss, jnp.sum(correct) / jnp.maximum(jnp.sum(counted), 1.0)


def _classification_eval_counts(model, params, batch, config):
    """An example is correct when its top class is one of its labels; examples
    without any label (ImageNet ReaL) are skipped."""
    logits = model.apply({"params": params}, batch["image"], train=False)
    correct, counted = correct_and_counted(logits, batch["labels"], batch["mask"])
    per_example = jax.vmap(
        lambda lg, lb: classification_loss(lg[None], lb[None], config.loss, 0.0)
    )(logits, batch["labels"])
    return jnp.sum(correct), jnp.sum(counted), jnp.sum(per_example * counted)


def _masked_patch_loss_and_accuracy(model, params, batch, config, rngs, train):
    """The corruption is drawn from rngs["mpp"]; accuracy is over the
    corrupted patches' mean-colour classes."""
    del config
    logits, targets, corrupted = model.apply(
        {"params": params}, batch["image"], train=train, rngs=rngs
    )
    hits = (jnp.argmax(logits, axis=-1) == targets) & corrupted
    return masked_patch_loss(logits, targets, corrupted), jnp.sum(hits) / jnp.sum(corrupted)


def _masked_patch_eval_counts(model, params, batch, config):
    """Every real example's corrupted patches, under a corruption fixed by the
    seed so that evaluations compare."""
    eval_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2**31 - 1)
    logits, targets, corrupted = model.apply(
        {"params": params}, batch["image"], train=False, rngs={"mpp": eval_rng}
    )
    weights = corrupted * batch["mask"][:, None]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    hits = jnp.argmax(logits, axis=-1) == targets
    return jnp.sum(hits * weights), jnp.sum(weights), jnp.sum(losses * weights)


OBJECTIVES = {
    "classification": Objective(
        build_model=lambda name, num_classes, options: get_model(name, num_classes, **options),
        loss_and_accuracy=_classification_loss_and_accuracy,
        eval_counts=_classification_eval_counts,
        uses_labels=True,
        accuracy_name="test",
    ),
    "masked_patch_prediction": Objective(
        build_model=lambda name, num_classes, options: get_masked_patch_model(name, **options),
        loss_and_accuracy=_masked_patch_loss_and_accuracy,
        eval_counts=_masked_patch_eval_counts,
        uses_labels=False,
        accuracy_name="masked-patch colour test",
    ),
}

"""Few-shot linear evaluation (the paper's Sec. 4.1; Fig. 4, Table 8).

The frozen representation of `shots` training images per class is regressed
onto {-1, 1}^K targets by regularised least squares, solved in closed form,
and the test images are classified by the largest regression output. Shots
are drawn anew for every seed; the result is the mean and standard deviation
of the test accuracy over seeds.

Details that make the numbers reproducible: features are standardised with
the support set's mean and standard deviation, and the intercept is not
regularised (it is the targets' mean on the centred features), so the
solution is exactly scikit-learn's `Ridge(alpha=l2_reg)` on standardised
features. Whichever of the primal (D×D) or dual (n×n) system is smaller is
solved, so few shots of wide features stay cheap.

From a training loop (see `evaluate`):

    fewshot_data = {"digits": fewshot.data_from_registry("digits", "train", "test",
                                                         preprocess=config.pp_eval, batch_size=256)}
    metrics = fewshot.evaluate(fewshot.representation_fn(model), params, fewshot_data)
"""

from collections.abc import Callable, Iterable, Mapping

import jax
import numpy as np
from absl import logging

from vit_jax.errors import UserError

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_L2_REG = 1.0  # On standardised features; the result is robust across 0.1-10.


def fit_ridge(features: np.ndarray, labels: np.ndarray, num_classes: int, l2_reg: float):
    """Closed-form ridge regression to {-1, 1}^K targets → a predict(features) function."""
    x = np.asarray(features, np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-8  # Constant features stay finite (they are zero after centring).
    x = (x - mean) / std
    targets = 2.0 * np.eye(num_classes)[np.asarray(labels)] - 1.0
    intercept = targets.mean(axis=0)
    centred_targets = targets - intercept
    n, d = x.shape
    if d <= n:
        weights = np.linalg.solve(x.T @ x + l2_reg * np.eye(d), x.T @ centred_targets)
    else:  # Same solution: (XᵀX + λI)⁻¹Xᵀ = Xᵀ(XXᵀ + λI)⁻¹.
        weights = x.T @ np.linalg.solve(x @ x.T + l2_reg * np.eye(n), centred_targets)

    def predict(test_features):
        standardised = (np.asarray(test_features, np.float64) - mean) / std
        return standardised @ weights + intercept

    return predict


def sample_shots(labels: np.ndarray, shots: int, num_classes: int, seed: int) -> np.ndarray:
    """Indices of `shots` random examples of every class."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        if len(members) < shots:
            raise UserError(
                f"class {label} has {len(members)} training examples, fewer than {shots} shots; "
                "use a larger training split or fewer shots."
            )
        chosen.append(rng.choice(members, shots, replace=False))
    return np.concatenate(chosen)


def fewshot_accuracy(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    shots: Iterable[int] = DEFAULT_SHOTS,
    seeds: Iterable[int] = DEFAULT_SEEDS,
    l2_reg: float = DEFAULT_L2_REG,
) -> dict[int, tuple[float, float]]:
    """(features, int labels) pools → {shots: (mean, std) test accuracy over seeds}."""
    train_features, train_labels = train
    test_features, test_labels = test
    results = {}
    for count in shots:
        accuracies = []
        for seed in seeds:
            support = sample_shots(train_labels, count, num_classes, seed)
            predict = fit_ridge(train_features[support], train_labels[support], num_classes, l2_reg)
            predicted = predict(test_features).argmax(axis=-1)
            accuracies.append(float(np.mean(predicted == test_labels)))
        results[count] = (float(np.mean(accuracies)), float(np.std(accuracies)))
    return results


def representation_fn(model) -> Callable:
    """A jitted (params, images) → pre-logits features function for a model with or
    without a head (the 'intermediates' the model sows)."""

    @jax.jit
    def features(params, images):
        _, state = model.apply({"params": params}, images, train=False, mutable=["intermediates"])
        return state["intermediates"]["representation"][0]

    return features


def extract_features(features_fn: Callable, params, batches: Iterable[dict]):
    """(features, int labels) of every real (unmasked) example of `batches`."""
    features, labels = [], []
    for batch in batches:
        keep = np.asarray(batch.get("mask", np.ones(len(batch["labels"])))) > 0
        features.append(np.asarray(jax.device_get(features_fn(params, batch["image"])))[keep])
        labels.append(np.asarray(batch["labels"]).argmax(axis=-1)[keep])
    if not features:
        raise UserError("the split yielded no batches; nothing to extract features from.")
    return np.concatenate(features), np.concatenate(labels)


# A dataset for `evaluate`: (number of classes, train batches factory, test batches factory).
# Factories, because a periodic evaluator needs a fresh pass over both splits each time.
FewShotData = tuple[int, Callable[[], Iterable[dict]], Callable[[], Iterable[dict]]]


def data_from_registry(
    name: str,
    train_split: str,
    test_split: str,
    *,
    preprocess: str,
    batch_size: int,
    data_dir: str | None = None,
) -> FewShotData:
    """A FewShotData over vit_jax.data's named datasets (TFDS split syntax)."""
    from vit_jax import data

    def batches(split):
        return lambda: data.get_iterator(
            name,
            split,
            batch_size=batch_size,
            preprocess=preprocess,
            train=False,
            data_dir=data_dir,
            process_index=0,
            process_count=1,
        )

    num_classes = data.get_dataset_info(name, data_dir).num_classes
    return num_classes, batches(train_split), batches(test_split)


def evaluate(
    features_fn: Callable,
    params,
    datasets: Mapping[str, FewShotData],
    shots: Iterable[int] = DEFAULT_SHOTS,
    seeds: Iterable[int] = DEFAULT_SEEDS,
    l2_reg: float = DEFAULT_L2_REG,
) -> dict[str, float]:
    """Few-shot accuracy of `features_fn(params, images)` on every dataset.

    Returns {'fewshot/NAME/Kshot': mean, 'fewshot/NAME/Kshot_std': std}, ready
    for a metric writer. Each process computes the same numbers from its own
    full pass (process_index=0 of 1 in data_from_registry).
    """
    metrics = {}
    shots, seeds = tuple(shots), tuple(seeds)
    for name, (num_classes, train_batches, test_batches) in datasets.items():
        train = extract_features(features_fn, params, train_batches())
        test = extract_features(features_fn, params, test_batches())
        logging.info(
            "few-shot %s: %d train and %d test features of width %d",
            name,
            len(train[1]),
            len(test[1]),
            train[0].shape[1],
        )
        results = fewshot_accuracy(train, test, num_classes, shots, seeds, l2_reg)
        for count, (mean, std) in results.items():
            metrics[f"fewshot/{name}/{count}shot"] = mean
            metrics[f"fewshot/{name}/{count}shot_std"] = std
            logging.info("few-shot %s %d-shot: %.4f ± %.4f", name, count, mean, std)
    return metrics

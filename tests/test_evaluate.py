"""Accuracy, ImageNet ReaL and the few-shot linear probe against hand computations,
scikit-learn, and real digits through the project's input pipeline."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.linear_model import Ridge

from vit_jax import data
from vit_jax.evaluate import accuracy, fewshot
from vit_jax.models import get_model


def test_real_accuracy_of_a_hand_made_batch():
    """Five images: ReaL label sets {2}, {0, 1}, {} (skipped), {3}, {1, 3}; the
    top predictions 2, 1, 0, 0, 3 are right for images 0, 1 and 4: 3 of 4."""
    label_sets = [[2], [0, 1], [], [3], [1, 3]]
    predictions = [2, 1, 0, 0, 3]
    logits = np.eye(4)[predictions] * 5.0
    labels = accuracy.multi_hot(label_sets, 4)
    hit, counted = accuracy.correct_and_counted(logits, labels)
    np.testing.assert_array_equal(hit, [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(counted, [1, 1, 0, 1, 1])

    batches = [
        {"image": logits[:3], "labels": labels[:3], "mask": np.ones(3)},
        # The last batch is padded with a duplicate that the mask removes.
        {"image": logits[3:], "labels": labels[[3, 4, 4]][:2], "mask": np.array([1, 1])},
    ]
    result = accuracy.accuracy(lambda params, x: x, None, batches)
    assert result == {"accuracy": 0.75, "num_counted": 4, "num_skipped": 1}


def test_correct_and_counted_inside_jit_with_padding():
    logits = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    labels = jnp.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    mask = jnp.array([1, 1, 0])
    hit, counted = jax.jit(accuracy.correct_and_counted)(logits, labels, mask)
    np.testing.assert_array_equal(hit, [1, 0, 0])
    np.testing.assert_array_equal(counted, [1, 1, 0])


@pytest.mark.parametrize("num_examples, width", [(60, 8), (12, 40)])  # primal and dual forms
def test_ridge_probe_equals_scikit_learn(num_examples, width):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(num_examples, width)) * rng.uniform(0.1, 10, width) + 3
    labels = np.arange(num_examples) % 4
    test_features = rng.normal(size=(30, width)) * 2 + 3
    predict = fewshot.fit_ridge(features, labels, 4, l2_reg=0.5)

    mean, std = features.mean(0), features.std(0)
    reference = Ridge(alpha=0.5, fit_intercept=True).fit(
        (features - mean) / std, 2 * np.eye(4)[labels] - 1
    )
    expected = reference.predict((test_features - mean) / std)
    np.testing.assert_allclose(predict(test_features), expected, atol=1e-4)


def test_probe_is_perfect_on_linearly_separable_features():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(10, 32)) * 5
    labels = np.repeat(np.arange(10), 40)
    features = centres[labels] + 0.3 * rng.normal(size=(400, 32))
    train, test = (features[::2], labels[::2]), (features[1::2], labels[1::2])
    results = fewshot.fewshot_accuracy(train, test, 10, shots=(1, 5, 10), seeds=(0, 1, 2))
    assert results == {1: (1.0, 0.0), 5: (1.0, 0.0), 10: (1.0, 0.0)}


def test_shot_sampling_draws_each_class_and_names_a_short_class():
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    support = fewshot.sample_shots(labels, 2, 3, seed=0)
    np.testing.assert_array_equal(np.sort(labels[support]), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(support, fewshot.sample_shots(labels, 2, 3, seed=0))
    with pytest.raises(ValueError, match="class 0 has 2 training examples, fewer than 3"):
        fewshot.sample_shots(labels, 3, 3, seed=0)


def _digits(split):
    return data.get_iterator(
        "digits", split, batch_size=128, preprocess="value_range(-1,1)", train=False
    )


def _train_briefly(model, params, steps):
    """Adam on softmax cross-entropy over digits batches: a few hundred steps."""
    optimizer = optax.adam(3e-3)

    @jax.jit
    def step(params, opt_state, images, labels):
        def loss_fn(p):
            logits = model.apply({"params": p}, images, train=False)
            return optax.softmax_cross_entropy(logits, labels).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    opt_state = optimizer.init(params)
    batches = data.get_iterator(
        "digits", "train", batch_size=128, preprocess="value_range(-1,1)", seed=0
    )
    for _, batch in zip(range(steps), batches, strict=False):
        params, opt_state = step(params, opt_state, batch["image"], batch["labels"])
    return params


def test_fewshot_on_digits_improves_with_training():
    model = get_model("testing", num_classes=10, patch_size=(2, 2))
    initial = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    trained = _train_briefly(model, initial, steps=150)
    digits = {"digits": (10, lambda: _digits("train"), lambda: _digits("test"))}
    features_fn = fewshot.representation_fn(model)
    before = fewshot.evaluate(features_fn, initial, digits, shots=(5, 10), seeds=(0, 1))
    after = fewshot.evaluate(features_fn, trained, digits, shots=(5, 10), seeds=(0, 1))
    print("few-shot digits, random init:", before, "\ntrained 150 steps:", after)
    assert set(after) == {f"fewshot/digits/{k}shot{s}" for k in (5, 10) for s in ("", "_std")}
    # Measured: random init about 0.35, 150 steps about 0.75 (10 classes: chance 0.1).
    for shots in (5, 10):
        assert after[f"fewshot/digits/{shots}shot"] > before[f"fewshot/digits/{shots}shot"] + 0.2
        assert before[f"fewshot/digits/{shots}shot"] > 0.15  # Random features carry signal.


@pytest.mark.parametrize(
    "name, overrides", [("testing", {"representation_size": 12}), ("BiT-testing", {})]
)
def test_probe_features_are_the_representation_before_the_head(name, overrides):
    # With a pre-logits layer (the pre-training ViTs) the features are its tanh
    # output, the input of the head: what the model returns without a head.
    model = get_model(name, 10, **overrides)
    images = jax.random.uniform(jax.random.key(0), (3, 16, 16, 3), minval=-1)
    params = model.init(jax.random.key(1), images)["params"]
    features = fewshot.representation_fn(model)(params, images)
    headless = get_model(name, None, **overrides)
    no_head = {k: v for k, v in params.items() if k != "head"}
    expected = headless.apply({"params": no_head}, images)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)  # jit vs eager.

"""Schedules, EMA, weight decay and gradient accumulation against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vit_jax import optim
from vit_jax.config import default_config
from vit_jax.models import get_model


def _config(**overrides):
    config = default_config()
    config.update(overrides)
    return config


def test_warmup_then_linear_decay_matches_closed_form():
    schedule = optim.learning_rate_schedule(0.1, total_steps=110, warmup_steps=10, decay="linear")
    for step in (0, 3, 10, 50, 110, 200):
        expected = 0.1 * step / 10 if step < 10 else 0.1 * (1 - min(step - 10, 100) / 100)
        np.testing.assert_allclose(schedule(step), expected, rtol=1e-6, atol=1e-9)


def test_cosine_decay_matches_closed_form_and_end_fraction():
    schedule = optim.learning_rate_schedule(
        2.0, total_steps=100, warmup_steps=0, decay="cosine", end_lr_fraction=0.1
    )
    for step in (0, 25, 50, 100):
        expected = 0.2 + 1.8 * 0.5 * (1 + np.cos(np.pi * step / 100))
        np.testing.assert_allclose(schedule(step), expected, rtol=1e-6)


def test_schedule_rejects_warmup_longer_than_training():
    with pytest.raises(ValueError, match="warmup_steps=100"):
        optim.learning_rate_schedule(1.0, total_steps=50, warmup_steps=100, decay="cosine")


def test_ema_is_the_debiased_weighted_mean_of_the_trained_params():
    # ema_n = Σ_{t=1..n} (1 - d) d^(n-t) p_t / (1 - d^n): the start (here 100,
    # standing for the initial params) has no weight, unlike a plain recursion.
    decay, values = 0.9, [5.0, -2.0, 3.0, 0.5]
    ema = {"w": jnp.array(100.0)}
    for step, value in enumerate(values, 1):
        ema = jax.jit(optim.ema_update, static_argnums=2)(ema, {"w": jnp.array(value)}, decay, step)
    n = len(values)
    weights = [(1 - decay) * decay ** (n - t) for t in range(1, n + 1)]
    expected = sum(w * v for w, v in zip(weights, values, strict=True)) / (1 - decay**n)
    np.testing.assert_allclose(ema["w"], expected, rtol=1e-5)
    first = optim.ema_update({"w": jnp.array(100.0)}, {"w": jnp.array(5.0)}, decay, 1)
    assert float(first["w"]) == 5.0  # The first update replaces the start outright.


def test_ema_matches_optax_debiased_ema_and_tracks_at_the_paper_decay():
    # Table 2's decay over 500 fine-tuning steps: the average is of the trained
    # params only (a plain average from the start would keep 95% of it).
    rng = np.random.default_rng(0)
    trajectory = rng.normal(size=(500, 3)).astype(np.float32) + 7.0
    reference = optax.ema(0.9999, debias=True)
    ref_state = reference.init(jnp.zeros(3))
    ema = jnp.zeros(3)  # A zero head at the start: must not drag the average.
    for step, params in enumerate(trajectory, 1):
        ema = optim.ema_update(ema, jnp.asarray(params), 0.9999, jnp.asarray(step))
        ref, ref_state = reference.update(jnp.asarray(params), ref_state)
    np.testing.assert_allclose(ema, ref, rtol=2e-4)
    # At decay → 1 the debiased average is the plain mean of the trajectory.
    np.testing.assert_allclose(ema, trajectory.mean(axis=0), rtol=1e-3)
    plain = jnp.zeros(3)
    for params in trajectory:
        plain = optim.ema_update(plain, jnp.asarray(params), 0.9999)
    np.testing.assert_allclose(plain, (1 - 0.9999**500) * trajectory.mean(axis=0), rtol=2e-3)


def test_decoupled_weight_decay_is_scaled_by_the_full_learning_rate():
    # SGD without momentum and zero gradient: only the decay moves the params,
    # p ← p − lr_t · wd · p, and only for kernels (the default wd_mults).
    params = {"dense": {"kernel": jnp.full((2,), 2.0), "bias": jnp.full((2,), 2.0)}}
    config = _config(
        optimizer="sgd", momentum=0.0, lr=0.5, weight_decay=0.1, total_steps=10, lr_decay="constant"
    )
    tx, _ = optim.make_optimizer(config, params, config.total_steps)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["dense"]["kernel"], 2.0 - 0.5 * 0.1 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(new["dense"]["bias"], 2.0)


def test_adam_first_step_and_clipping():
    # Adam's first bias-corrected step is lr · g/(|g| + eps) ≈ lr · sign(g),
    # whatever the clipping did to the magnitude.
    params = {"w": jnp.array([1.0, -1.0])}
    config = _config(optimizer="adam", lr=0.01, total_steps=10, lr_decay="constant")
    tx, _ = optim.make_optimizer(config, params, config.total_steps)
    grads = {"w": jnp.array([30.0, -40.0])}  # Global norm 50 → clipped to 1.
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.01, 0.01], rtol=1e-5)


def test_lr_multipliers_freeze_matching_params():
    params = {"head": {"kernel": jnp.ones(2)}, "body": {"kernel": jnp.ones(2)}}
    config = _config(
        optimizer="sgd",
        momentum=0.0,
        lr=1.0,
        total_steps=10,
        lr_decay="constant",
        grad_clip_norm=0.0,
        lr_mults=[("^head/", 0.0)],
    )
    tx, _ = optim.make_optimizer(config, params, config.total_steps)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["head"]["kernel"], 0.0)
    np.testing.assert_allclose(updates["body"]["kernel"], -1.0)


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="optimizer='adamw'.*'adam', 'sgd'"):
        optim.make_optimizer(_config(optimizer="adamw"), {"w": jnp.ones(1)}, 100)


def test_four_micro_batches_of_8_equal_one_batch_of_32():
    model = get_model("testing", num_classes=10)
    images = jax.random.normal(jax.random.key(0), (32, 8, 8, 1))
    labels = jax.nn.one_hot(jnp.arange(32) % 10, 10)
    params = model.init(jax.random.key(1), images[:1])["params"]

    def loss_and_grad(params, batch, index):
        del index

        def loss_fn(p):
            logits = model.apply({"params": p}, batch["image"])
            return jnp.mean(optax.softmax_cross_entropy(logits, batch["labels"])), 0.0

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    batch = {"image": images, "labels": labels}
    accumulate = jax.jit(
        lambda p, b, k: optim.accumulate_gradients(loss_and_grad, p, b, k), static_argnums=2
    )
    (loss_full, _), grads_full = accumulate(params, batch, 1)
    (loss_acc, _), grads_acc = accumulate(params, batch, 4)
    np.testing.assert_allclose(loss_acc, loss_full, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_acc, grads_full
    )
    # And the same holds for the optimizer update built on them.
    tx, _ = optim.make_optimizer(_config(weight_decay=0.1), params, 10)
    state = tx.init(params)
    up_full, _ = tx.update(grads_full, state, params)
    up_acc, _ = tx.update(grads_acc, state, params)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), up_acc, up_full
    )


def test_bfloat16_first_moment_keeps_float32_second_moment_and_weights():
    # big_vision's mu_dtype='bfloat16': only μ is stored in bfloat16; ν, the
    # weights and the update stay float32. |μ̂/√ν̂| ≲ 1, so each of the three
    # steps' bfloat16 roundings of μ (2^-8 relative) moves an update by at
    # most ~lr·2^-8: the updates agree with float32 Adam's to lr·2^-7.
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(64,)), jnp.float32)}
    grads = [{"w": jnp.asarray(rng.normal(size=(64,)) + step, jnp.float32)} for step in range(3)]
    lr, results = 0.01, {}
    for mu_dtype in ("float32", "bfloat16"):
        config = _config(lr=lr, total_steps=10, lr_decay="constant", adam_mu_dtype=mu_dtype)
        tx, _ = optim.make_optimizer(config, params, config.total_steps)
        state, p = tx.init(params), params
        for g in grads:
            update, state = tx.update(g, state, p)
            p = optax.apply_updates(p, update)
        adam = state[1]  # Clipping, then Adam.
        assert adam.mu["w"].dtype == jnp.dtype(mu_dtype)
        assert adam.nu["w"].dtype == jnp.float32
        assert update["w"].dtype == p["w"].dtype == jnp.float32
        results[mu_dtype] = (update["w"], p["w"])
    (update_bf16, p_bf16), (update_f32, p_f32) = results["bfloat16"], results["float32"]
    assert not np.array_equal(update_bf16, update_f32)  # μ really is rounded.
    np.testing.assert_allclose(update_bf16, update_f32, rtol=0, atol=lr * 2**-7)
    np.testing.assert_allclose(p_bf16, p_f32, rtol=0, atol=3 * lr * 2**-7)


def test_unknown_first_moment_dtype_is_named():
    with pytest.raises(ValueError, match="adam_mu_dtype='float16'.*'bfloat16'"):
        optim.make_optimizer(_config(adam_mu_dtype="float16"), {"w": jnp.ones(1)}, 100)


def _params_after_one_trainer_step(accum_steps: int):
    """The trainer's own jitted step (vit_jax.step), one update on a batch of 16."""
    from vit_jax import sharding
    from vit_jax.step import build_trainer

    config = _config(
        model_name="testing", total_steps=10, warmup_steps=0, weight_decay=0.1, batch_size=16,
        accum_steps=accum_steps, lr_decay="constant",
    )  # fmt: skip
    mesh = sharding.make_mesh([("data", 1), ("fsdp", 1)], jax.devices()[:1])
    trainer = build_trainer(config, 10, (8, 8, 1), mesh)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32),
        "labels": np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)],
    }
    state, metrics = trainer.train_step(trainer.init_state(0), batch)
    return jax.device_get(state.params), float(metrics["train/loss"])


def test_trainer_step_with_accumulation_equals_the_step_without():
    # Four micro-batches of 4 and one batch of 16 give the same parameters
    # after one update of the trainer's step (Adam, weight decay, clipping).
    params_whole, loss_whole = _params_after_one_trainer_step(1)
    params_accum, loss_accum = _params_after_one_trainer_step(4)
    np.testing.assert_allclose(loss_accum, loss_whole, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), params_accum, params_whole
    )

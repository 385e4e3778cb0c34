"""The training loop's other objectives and evaluators: masked patch prediction
(Sec. 4.6) pre-training then fine-tuning from its export, and few-shot probes."""

import glob
import os

import numpy as np
import tensorflow as tf

from configs import testing
from vit_jax import checkpoint, train
from vit_jax.step import build_trainer


def _scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the run wrote to its TensorBoard event files."""
    values = {}
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("tensor"):  # Scalars only; hparams are strings.
                    array = tf.make_ndarray(value.tensor)
                    if array.ndim == 0 and array.dtype.kind == "f":
                        values.setdefault(value.tag, []).append((event.step, float(array)))
    return values


def test_masked_patch_pretraining_then_finetuning(tmp_path):
    config = testing.get_config()
    config.objective = "masked_patch_prediction"
    config.model = dict(patch_size=(2, 2))  # 16 patches of the 8x8 digits.
    config.total_steps = 40
    config.lr = 3e-3
    config.log_every = 1
    config.checkpoint_every = 0
    pretrain_dir = str(tmp_path / "mpp")
    train.train_and_evaluate(config, pretrain_dir)
    losses = [loss for _, loss in sorted(_scalars(pretrain_dir)["train/loss"])]
    # Grey digits have 8 colour classes: from ln(8) ≈ 2.1 nats, well down.
    assert losses[0] > 1.9 and np.mean(losses[-5:]) < losses[0] - 0.4
    exported = checkpoint.load_npz(os.path.join(pretrain_dir, "params.npz"))
    assert {"mask_token", "mpp_head"} <= set(exported)

    finetune = testing.get_config()
    finetune.model = dict(patch_size=(2, 2))
    finetune.pretrained = os.path.join(pretrain_dir, "params.npz")
    finetune.total_steps = 3
    finetune.checkpoint_every = 0
    state = train.train_and_evaluate(finetune, str(tmp_path / "finetune"))
    # The encoder starts from the self-supervised one; the head is new.
    assert "mask_token" not in state.params
    np.testing.assert_array_equal(
        np.asarray(state.params["embedding"]["kernel"]).shape,
        exported["embedding"]["kernel"].shape,
    )


def test_fewshot_probe_runs_during_and_after_training(tmp_path):
    config = testing.get_config()
    config.total_steps = 4
    config.checkpoint_every = 0
    config.fewshot_every = 2
    config.fewshot_datasets = (("digits", "train[:200]", "test[:100]"),)
    config.fewshot_shots = (1, 5)
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    scalars = _scalars(workdir)
    steps = sorted(step for step, _ in scalars["fewshot/digits/5shot"])
    assert steps == [2, 4]
    for step, accuracy in scalars["fewshot/digits/5shot"]:
        assert 0.1 <= accuracy <= 1.0, (step, accuracy)
    assert "fewshot/digits/1shot_std" in scalars


def test_the_trainers_ema_is_the_debiased_average_of_the_trained_params():
    """Polyak averaging at Table 2's 0.9999 over a few steps: the average is the
    decay-weighted mean of the params after each update (weights decay^(t-i)
    (1 - decay) / (1 - decay^t)), with no weight left on the initial params."""
    import jax
    import jax.numpy as jnp

    from vit_jax import sharding

    config = testing.get_config()
    config.ema_decay = 0.9999
    mesh = sharding.make_mesh((("data", -1),))
    trainer = build_trainer(config, 10, (8, 8, 3), mesh)
    state = trainer.init_state(config.seed)
    initial = jax.device_get(state.params)
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.uniform(-1, 1, (16, 8, 8, 3)), jnp.float32),
        "labels": jnp.asarray(np.eye(10)[rng.integers(0, 10, 16)], jnp.float32),
    }
    trained = []
    for _ in range(4):
        state, _ = trainer.train_step(state, batch)
        trained.append(jax.device_get(state.params))
    decay, steps = config.ema_decay, len(trained)
    weights = [decay ** (steps - i) * (1 - decay) / (1 - decay**steps) for i in range(1, 5)]
    expected = jax.tree.map(
        lambda *ps: sum(w * p for w, p in zip(weights, ps, strict=True)), *trained
    )
    for got, want in zip(
        jax.tree.leaves(jax.device_get(state.ema_params)), jax.tree.leaves(expected), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    head = jax.device_get(state.ema_params)["head"]["kernel"]
    assert np.abs(head).max() > 0 and np.abs(initial["head"]["kernel"]).max() == 0

"""Every run of `python -m experiments.paper list` builds its optimiser and
trains 2 steps, shrunk (experiments.overrides.shrink_overrides: the 'testing'
ViT on 8x8 digits, on one device) with its optimiser, learning rate, schedule and
warm-up (the full run's total steps), clipping, weight decay, EMA, loss and
model options as its config sets them.

The step runs un-jitted (step.make_train_step, the function the trainer jits),
so all runs share one set of compiled primitives instead of compiling a program
each. Runs whose shrunk configs are equal run the same step; it trains once for
all of them (the 57 VTAB runs of Table 2 shrink to one config)."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import matrix, overrides
from vit_jax import data, optim, sharding, step
from vit_jax.config import check_config

EXPERIMENTS = matrix.experiments()
NUM_CLASSES = 10  # digits
IMAGE_SHAPE = (8, 8, 1)
# The step un-jitted runs on one device: a mesh of the first.
ONE_DEVICE = sharding.make_mesh((("data", 1), ("fsdp", 1)), jax.devices()[:1])
_TRAINED = {}  # shrunk config (JSON) → (initial params, state after 2 steps, metrics)


@pytest.fixture(scope="module")
def batch():
    batches = data.get_iterator(
        "digits",
        "train",
        batch_size=8,
        preprocess="value_range(-1,1)|onehot(10)",
        seed=0,
        train=True,
    )
    return {k: jnp.asarray(v) for k, v in next(iter(batches)).items() if k in ("image", "labels")}


def shrunk_config(run):
    config = run.load_config()
    return overrides.apply_overrides(config, overrides.shrink_overrides(config))


def two_steps(config, batch):
    """(initial params, state after 2 steps, last metrics) of the trainer's step."""
    model = step.make_model(config, NUM_CLASSES)
    abstract = jax.eval_shape(lambda: step.init_params(model, jax.random.PRNGKey(0), IMAGE_SHAPE))
    tx, schedule = optim.make_optimizer(config, abstract, config.total_steps)
    state = step.make_state_factory(model, tx, config, IMAGE_SHAPE)(jax.random.PRNGKey(0))
    initial = state.params
    train_step = step.make_train_step(model, tx, schedule, config, ONE_DEVICE)
    for _ in range(2):
        state, metrics = train_step(state, batch)
    return initial, state, jax.device_get(metrics)


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_every_run_builds_its_optimiser_and_trains_two_steps(experiment, batch):
    for run in EXPERIMENTS[experiment].runs:
        full = run.load_config()
        config = shrunk_config(run)
        check_config(config)
        # What the shrink keeps.
        for field in (
            "optimizer",
            "lr",
            "warmup_steps",
            "lr_decay",
            "weight_decay",
            "grad_clip_norm",
            "ema_decay",
            "loss",
            "label_smoothing",
            "objective",
        ):
            assert config[field] == full[field], (run.name, field)
        assert 0 <= config.warmup_steps < config.total_steps, run.name
        key = json.dumps(config.to_dict(), sort_keys=True, default=str)
        if key not in _TRAINED:
            _TRAINED[key] = two_steps(config, batch)
        initial, state, metrics = _TRAINED[key]
        assert int(state.step) == 2 and metrics[step.FINITE_KEY], run.name
        assert np.isfinite(metrics["train/loss"]) and np.isfinite(metrics["train/grad_norm"])
        # The second step's learning rate is the schedule's at step 1.
        expected_lr = config.lr / config.warmup_steps if config.warmup_steps else config.lr
        assert metrics["train/lr"] == pytest.approx(expected_lr, rel=1e-3), run.name
        moved = jax.tree.leaves(
            jax.tree.map(lambda a, b: bool(jnp.any(a != b)), initial, state.params)
        )
        assert any(moved), run.name
        assert (state.ema_params is not None) == bool(config.ema_decay), run.name
        if config.ema_decay:
            assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(state.ema_params))


def test_data_size_runs_are_fig_3_and_fig_4():
    from configs import data_size_study

    runs = EXPERIMENTS["data_size"].runs
    # Work directories: distinct even where the file system ignores case (ViT-b/ViT-B).
    assert len({run.name.lower() for run in runs}) == len(runs)
    fig4 = [run for run in runs if run.name.startswith("fig4-")]
    assert {run.arg for run in fig4} == {
        f"model={model},data={data}"
        for model in data_size_study.FIG_4_MODELS
        for data in data_size_study.FIG_4_DATA
    }
    for run in fig4:  # One setting per model, periodic 5-shot probes.
        config = run.load_config()
        assert config.fewshot_datasets and config.fewshot_every > 0, run.name
    fig3 = {run.name: run for run in runs if run.name.startswith("fig3-")}
    pre = [run for run in fig3.values() if run.config_file == "configs/data_size_study.py"]
    points = len(list(itertools.product(*data_size_study.REGULARISATION_SWEEP.values())))
    # 4 ViTs x (ImageNet, ImageNet-21k) x the grid, 5 ViTs on JFT (Table 3's row).
    assert len(pre) == 4 * 2 * points + 5
    for run in pre:  # Every pre-training is fine-tuned on ImageNet (Fig. 3, Table 5).
        tuned = fig3[f"{run.name}-imagenet"]
        assert tuned.config_file == "configs/vit_finetune.py"
        assert matrix.pretrained_path("data_size", run.name) in tuned.arg
        assert dict(tuned.published), tuned.name
        if "data=jft" not in run.arg:
            assert "weight_decay=" in run.arg and "label_smoothing=" in run.arg

"""Bad input fails with a clear message (a UserError) before any training starts."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest
from absl import flags
from ml_collections import config_flags

from vit_jax import train
from vit_jax.config import check_config
from vit_jax.errors import UserError
from vit_jax.step import make_model
from vit_jax.train_state import Checkpoints, TrainState, describe_params


def _testing_config(**overrides):
    path = os.path.join(os.path.dirname(__file__), "..", "configs", "testing.py")
    spec = importlib.util.spec_from_file_location("testing_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update(overrides)
    return config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(model_name="ViT-Q_16"), "Unknown model 'ViT-Q_16'"),
        (dict(dataset="no_such_dataset"), "no_such_dataset"),
        (dict(optimizer="lamb"), "optimizer='lamb' is unknown"),
        (dict(loss="hinge"), "loss='hinge' is unknown"),
        (dict(batch_size=12), "batch_size=12 is not divisible by the 8"),
        (dict(batch_size=16, accum_steps=3), "divisible by accum_steps=3"),
        # The test data is opened with the training data: a bad pp_eval stops the
        # run before training, not after it.
        (dict(pp_eval="value_range(-1,1)|no_such_op"), "Unknown preprocessing op 'no_such_op'"),
    ],
)
def test_bad_config_value_is_named(tmp_path, overrides, message):
    with pytest.raises(Exception, match=message):
        train.train_and_evaluate(_testing_config(**overrides), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_config_field_that_does_not_exist_in_the_file():
    config = _testing_config()
    with config.unlocked():
        config.learning_rate = 0.1
    with pytest.raises(ValueError, match="config.learning_rate is not a field.*'lr'"):
        check_config(config)


def _parse_command_line(*overrides):
    """Parses flags as `python -m vit_jax.main` does (config_flags reads argv;
    main.py accepts new attributes so that any model option can be set)."""
    argv = ["main", "--config=configs/testing.py", *overrides]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config",
        None,
        "",
        flag_values=flag_values,
        sys_argv=argv,
        lock_config=False,
        accept_new_attributes=True,
    )
    flag_values(argv)
    return flag_values.config


def test_command_line_override_of_a_missing_field_is_rejected():
    assert _parse_command_line("--config.lr=0.1").lr == 0.1
    config = _parse_command_line("--config.learning_rate=0.1")
    with pytest.raises(UserError, match="config.learning_rate is not a field.*'lr'"):
        check_config(config)


def test_command_line_sets_model_options_the_file_does_not_list():
    config = _parse_command_line(
        "--config.model.remat=true",
        "--config.model.classifier=gap",
        "--config.model.dtype=bfloat16",
    )
    assert dict(config.model) == {"remat": True, "classifier": "gap", "dtype": "bfloat16"}
    check_config(config)
    model = make_model(config, num_classes=10)
    assert model.remat is True and model.classifier == "gap"
    with pytest.raises(UserError, match="not an option of testing .* Its options: .*remat"):
        check_config(_parse_command_line("--config.model.attention_impl=explicit"))


def _tiny_state(width):
    params = {"dense": {"kernel": jnp.zeros((3, width))}}
    return TrainState(
        step=jnp.array(1, jnp.int32),
        params=params,
        opt_state=(),
        ema_params=None,
        rng=jax.random.PRNGKey(0),
    )


def test_workdir_with_a_checkpoint_of_another_model(tmp_path):
    saved = _tiny_state(4)
    checkpoints = Checkpoints(str(tmp_path), keep=1)
    checkpoints.save(saved, describe_params("ViT-Ti_16", {}, saved.params))
    checkpoints.wait()
    same = describe_params("ViT-Ti_16", {}, saved.params)
    restored = checkpoints.restore(jax.eval_shape(lambda: saved), same)
    assert int(restored.step) == 1

    with pytest.raises(ValueError, match="checkpoint of model ViT-Ti_16.*asks for ViT-S_16"):
        checkpoints.restore(saved, describe_params("ViT-S_16", {}, saved.params))
    wider = _tiny_state(5)
    with pytest.raises(ValueError, match=r"dense/kernel: \[3, 4\] → \[3, 5\]"):
        checkpoints.restore(wider, describe_params("ViT-Ti_16", {}, wider.params))
    checkpoints.close()

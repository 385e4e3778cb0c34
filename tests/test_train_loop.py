"""The loop's contract with its caller."""

import copy

from test_train_errors import _testing_config

from vit_jax import data, train
from vit_jax.config import resolve_total_steps


def test_a_run_given_in_epochs_leaves_the_callers_config_as_given(tmp_path):
    config = _testing_config(total_steps=0, total_epochs=0.05, export_npz=False)
    given = copy.deepcopy(config)
    state = train.train_and_evaluate(config, str(tmp_path))
    steps = resolve_total_steps(config, data.num_examples("digits", "train"))
    assert steps > 2 and int(state.step) == steps  # Trained for the epochs' steps,
    assert config.to_dict() == given.to_dict()  # without writing them into the config.

"""The VTAB-1k sweep (experiments/vtab.py) driven through the training loop on
the bundled digits (VTAB's own data needs downloads)."""

import os

import ml_collections
import pytest

from experiments import vtab
from tests.test_evaluate_cli import DIGITS_MODEL, digits_checkpoint
from vit_jax.errors import UserError


def test_vtab_sweep_fine_tunes_each_task_and_resumes(tmp_path):
    _, _, checkpoint = digits_checkpoint(tmp_path)
    # The paper's per-task recipe, then shrunk to the digits and a few steps.
    configs = vtab.task_configs(
        "configs/vit_vtab.py", ("dtd", "svhn"), "ViT-B_16", checkpoint, steps=3
    )
    configs = {"digits_a": configs["dtd"], "digits_b": configs["svhn"]}
    assert configs["digits_a"].dataset == "vtab/dtd" and configs["digits_a"].lr == 0.01
    for config in configs.values():
        config.model_name, config.model = "testing", ml_collections.ConfigDict(DIGITS_MODEL)
        config.dataset, config.train_split, config.test_split = "digits", "train[:800]", "test"
        config.image_size, config.pp_train = 8, "value_range(-1,1)"
        config.pp_eval = "value_range(-1,1)"
        config.batch_size, config.eval_batch_size = 16, 16
        config.checkpoint_every, config.export_npz = 0, False
    # digits_b finished in an earlier run: only digits_a is fine-tuned (one
    # training run keeps this test short), digits_b's result is read back.
    (tmp_path / "sweep" / "digits_b").mkdir(parents=True)
    (tmp_path / "sweep" / "digits_b" / "result.json").write_text('{"accuracy": 0.25}')
    results = vtab.run_sweep(configs, str(tmp_path / "sweep"))
    assert sorted(results) == ["digits_a", "digits_b"] and results["digits_b"] == 0.25
    assert 0.0 <= results["digits_a"] <= 1.0
    assert (tmp_path / "sweep" / "digits_a" / "checkpoints").is_dir()
    assert vtab.run_sweep(configs, str(tmp_path / "sweep")) == results


def test_the_recipe_comes_from_the_configs_package_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # No configs/ folder here: the installed package serves.
    assert not os.path.exists("configs")
    (config,) = vtab.task_configs("configs/vit_vtab.py", ("dtd",), "ViT-B_16", "B16.npz").values()
    assert config.pretrained == "B16.npz" and config.dataset == "vtab/dtd"


@pytest.mark.parametrize(
    "argument, message",
    [
        ("--config=/elsewhere/recipe.py", "name a file of the configs package"),
        ("--config=configs/no_such_recipe.py", "no such config"),
        ("--tasks=dtd,imagenet", "unknown VTAB tasks"),
    ],
)
def test_bad_arguments_are_refused_before_any_training(tmp_path, argument, message):
    argv = ["--checkpoint=F.npz", "--model=ViT-B_16", f"--workdir={tmp_path}", argument]
    with pytest.raises(UserError, match=message):
        vtab.main(argv)
    assert not os.listdir(tmp_path)

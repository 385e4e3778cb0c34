"""`python -m vit_jax.evaluate` on a saved checkpoint, and the VTAB-1k table."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import data
from vit_jax.checkpoint import save_npz
from vit_jax.data.local import load_digits
from vit_jax.evaluate import vtab
from vit_jax.evaluate.__main__ import main
from vit_jax.models import get_model

DIGITS_MODEL = dict(patch_size=(2, 2))  # 'testing' on 8x8 digits: a 4x4 grid.


def digits_checkpoint(tmp_path):
    """A 'testing' model with N(0, 0.5) weights drawn by numpy (compiling init is slow)."""
    model = get_model("testing", num_classes=10, **DIGITS_MODEL)
    images = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: rng.normal(0, 0.5, leaf.shape).astype(np.float32), shapes)
    path = tmp_path / "digits.npz"
    save_npz(path, params)
    return model, params, str(path)


def test_accuracy_command_matches_a_direct_computation(tmp_path, capsys):
    model, params, checkpoint = digits_checkpoint(tmp_path)
    result = main(["accuracy", f"--checkpoint={checkpoint}", "--dataset=digits", "--split=test"])
    assert json.loads(capsys.readouterr().out) == result

    images, labels = load_digits()["test"]
    logits = model.apply({"params": params}, images / 127.5 - 1.0, train=False)
    expected = float(np.mean(np.argmax(logits, -1) == labels))
    assert result["num_counted"] == len(labels) and result["num_skipped"] == 0
    np.testing.assert_allclose(result["accuracy"], expected)


def test_fewshot_command_reports_mean_and_std_per_shot(tmp_path):
    _, _, checkpoint = digits_checkpoint(tmp_path)
    result = main(
        ["fewshot", f"--checkpoint={checkpoint}", "--datasets=digits", "--shots=1,5", "--seeds=0,1"]
    )
    assert sorted(result) == sorted(
        f"fewshot/digits/{k}shot{suffix}" for k in (1, 5) for suffix in ("", "_std")
    )
    assert all(0.0 <= value <= 1.0 for value in result.values())


def test_vtab_table_aggregates_groups_and_the_mean_over_tasks():
    results = {}
    for group, value in (("natural", 0.9), ("specialized", 0.8), ("structured", 0.5)):
        results.update({task: value for task in data.VTAB_GROUPS[group]})
    summary = vtab.summarize(results, data.VTAB_GROUPS)
    # 7 natural, 4 specialized and 8 structured tasks: the mean weighs tasks, not groups.
    expected_mean = (7 * 0.9 + 4 * 0.8 + 8 * 0.5) / 19
    np.testing.assert_allclose(
        [summary["natural"], summary["specialized"], summary["structured"], summary["mean"]],
        [0.9, 0.8, 0.5, expected_mean],
    )
    table = vtab.results_table(results, data.VTAB_GROUPS)
    assert "| **Natural** | mean of 7 | 90.00 |" in table
    assert f"| **VTAB** | mean of 19 tasks | {100 * expected_mean:.2f} |" in table
    assert len(table.splitlines()) == 2 + 19 + 3 + 1

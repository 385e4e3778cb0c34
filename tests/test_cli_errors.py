"""Each command line tells a user error in one message, without a traceback,
and exits with status 1 (2 for bad usage); --help exits 0; a bug keeps its
traceback. The subprocess cases are one of each kind, per command line (the
traceback is what the user sees); more messages are checked in-process below, through the same
errors.cli wrapper the commands' __main__ use."""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image
from test_train_errors import _testing_config
from test_train_runs import REPO, TINY, subprocess_env

from vit_jax import errors, infer, train
from vit_jax.checkpoint import save_npz
from vit_jax.config import check_config
from vit_jax.evaluate.__main__ import main as evaluate_main
from vit_jax.models import get_model

_MAIN = [sys.executable, "-m", "vit_jax.main", "--config=configs/testing.py", *TINY]

# name → (arguments after the command, text the one message must contain);
# {tmp} is the test's directory.
CASES = {
    "config field": (["--config.learning_rate=0.1"], "config.learning_rate is not a field"),
    "model name": (["--config.model_name=ViT-X_16"], "Unknown model 'ViT-X_16'. Did you mean"),
    "unprepared data": (
        ["--config.dataset=cifar10", "--config.data_dir={tmp}/no_data"],
        "tfds build cifar10 --data_dir={tmp}/no_data",
    ),
    "batch size 0": (["--config.batch_size=0"], "batch_size=0"),
    "model option": (
        ["--config.model.attention_impl=explicit"],
        "config.model.attention_impl is not an option of testing",
    ),
    "image shapes": (
        [
            "--config.dataset=folder:{tmp}/photos",
            "--config.test_split=train",
            "--config.pp_train=value_range(-1,1)",
        ],
        "Images of different shapes reached the batch",
    ),
    "non-finite loss": (
        ["--config.lr=1e6", "--config.grad_clip_norm=0", "--config.total_steps=40"],
        "not finite at step",
    ),
    "infer checkpoint": (
        ["-m", "vit_jax.infer", "--checkpoint={tmp}/missing.npz", "{tmp}/photos/a/0.png"],
        "missing.npz",
    ),
    "infer model": (
        [
            "-m",
            "vit_jax.infer",
            "--checkpoint={tmp}/testing.npz",
            "--model=ViT-B_16",
            "{tmp}/photos/a/0.png",
        ],
        "does not fit --model=ViT-B_16",
    ),
    "evaluate checkpoint": (
        [
            "-m",
            "vit_jax.evaluate",
            "accuracy",
            "--checkpoint={tmp}/missing.npz",
            "--dataset=digits",
        ],
        "missing.npz",
    ),
    "analysis checkpoint": (
        ["-m", "vit_jax.analysis", "posemb", "--checkpoint={tmp}/missing.npz"],
        "missing.npz",
    ),
    "config file": (["--config=configs/nope.py"], "No such file or directory: 'configs/nope.py'"),
    "workdir is a file": (["--workdir={tmp}/testing.npz"], "is a file, not a directory"),
    "workdir not writable": (["--workdir=/sys/vit_jax_workdir"], "cannot be written"),
    "one class": (
        ["--config.dataset=folder:{tmp}/one_class", "--config.test_split=train"],
        "has 1 class(es): a classifier needs at least 2",
    ),
    "evaluate dataset": (
        ["-m", "vit_jax.evaluate", "accuracy", "--checkpoint={tmp}/testing.npz"],
        "accuracy needs --dataset=NAME (and --data_dir=DIR",
    ),
}
# Bad usage exits with status 2; every other user error with 1.
USAGE_CASES = {"config file", "evaluate dataset"}
_PARALLEL = 4  # Processes at a time: each imports TensorFlow and JAX.


def _command(name, tmp):
    args = [a.replace("{tmp}", str(tmp)) for a in CASES[name][0]]
    if args[0] == "-m":
        return [sys.executable, *args]
    return [*_MAIN, f"--workdir={tmp}/{name.replace(' ', '_')}", *args]


def _prepare(tmp):
    """Photos of two sizes, and a 'testing' checkpoint with N(0, 0.5) weights."""
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(20, 30, 3), (25, 25, 3)] * 4):
        folder = tmp / "photos" / "ab"[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, shape, np.uint8)).save(folder / f"{i}.png")
    (tmp / "one_class" / "a").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(
            tmp / "one_class" / "a" / f"{i}.png"
        )
    model = get_model("testing", num_classes=10)
    images = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    params = jax.tree.map(lambda leaf: rng.normal(0, 0.5, leaf.shape).astype(np.float32), shapes)
    save_npz(tmp / "testing.npz", params)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_errors")
    _prepare(tmp)
    results, names = {}, list(CASES)
    for start in range(0, len(names), _PARALLEL):
        running = {
            name: subprocess.Popen(
                _command(name, tmp),
                cwd=REPO,
                env=subprocess_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in names[start : start + _PARALLEL]
        }
        for name, process in running.items():
            out, err = process.communicate(timeout=300)
            results[name] = (process.returncode, out, err)
    return tmp, results


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_is_one_message_without_traceback(outcomes, name):
    tmp, results = outcomes
    returncode, out, err = results[name]
    expected = CASES[name][1].replace("{tmp}", str(tmp))
    expected_code = errors.EXIT_USAGE if name in USAGE_CASES else errors.EXIT_USER_ERROR
    assert returncode == expected_code, f"exit {returncode}:\n{err[-3000:]}"
    assert "Traceback" not in out + err, err[-3000:]
    messages = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(messages) == 1, err[-3000:]
    assert expected in err[err.index("Error: ") :], err[-3000:]


@pytest.mark.parametrize("module", ["vit_jax.main", "vit_jax.compile"])
def test_help_exits_0(module):
    process = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "--config" in process.stdout


def test_a_two_class_folder_trains_with_the_configs_onehot(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(8):
        folder = tmp_path / "photos" / "ab"[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(folder / f"{i}.png")
    config = _testing_config(
        dataset=f"folder:{tmp_path}/photos", test_split="train", total_steps=4, batch_size=8
    )
    state = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert state.params["head"]["kernel"].shape[-1] == 2  # Not the digits' 10.


def test_model_options_the_config_file_does_not_list_are_settable(tmp_path):
    workdir = tmp_path / "run"
    overrides = [
        "--config.model.classifier=gap",
        "--config.model.remat=True",
        "--config.model.representation_size=8",
        "--config.total_steps=4",
    ]
    process = subprocess.run(
        [*_MAIN, f"--workdir={workdir}", *overrides],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    with open(workdir / "checkpoints" / "4" / "description" / "metadata") as f:
        description = json.load(f)
    assert description["model"] == {
        "classifier": "'gap'",
        "remat": "True",
        "representation_size": "8",
    }
    assert "pre_logits/kernel" in description["param_shapes"]  # The option took effect.
    assert "cls" not in description["param_shapes"]  # GAP: no class token.


def test_a_bug_keeps_its_traceback():
    @errors.cli
    def buggy():
        return {}["missing"]

    with pytest.raises(KeyError):
        buggy()

    @errors.cli
    def user_mistake():
        raise errors.UserError("config.lr=-1 must be positive.")

    with pytest.raises(SystemExit) as exit_info:
        user_mistake()
    assert exit_info.value.code == errors.EXIT_USER_ERROR


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dataset="cifar11"), "Unknown dataset 'cifar11'"),
        (dict(dataset="folder:/nonexistent/photos"), "Image folder /nonexistent/photos does not"),
        (dict(pretrained="/nonexistent/params.npz"), "/nonexistent/params.npz"),
        (dict(train_split="trian"), "Unknown split 'trian'"),
    ],
)
def test_training_input_errors_are_user_errors(tmp_path, overrides, message):
    with pytest.raises(errors.UserError, match=re.escape(message)):
        train.train_and_evaluate(_testing_config(**overrides), str(tmp_path))


def test_model_option_of_the_wrong_kind():
    config = _testing_config()
    config.model = ml_collections.ConfigDict({"hidden_size": "wide"})
    with pytest.raises(errors.UserError, match="hidden_size='wide': this option takes int"):
        check_config(config)
    config.model = ml_collections.ConfigDict({"attention_fn": "cudnn"})
    with pytest.raises(errors.UserError, match="--config.attention=auto"):
        check_config(config)


def test_infer_and_evaluate_user_errors_print_one_line(tmp_path, capsys):
    _prepare(tmp_path)
    commands = [
        (infer.main, [f"--checkpoint={tmp_path}/testing.npz", f"{tmp_path}/no_such.jpg"]),
        (
            evaluate_main,
            [
                "accuracy",
                f"--checkpoint={tmp_path}/testing.npz",
                "--dataset=cifar10",
                f"--data_dir={tmp_path}/no_data",
            ],
        ),
    ]
    for main, argv in commands:
        with pytest.raises(SystemExit) as exit_info:
            errors.cli(main)(argv)
        assert exit_info.value.code == errors.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "no_such.jpg" in err and "tfds build cifar10" in err
    assert err.count("Error: ") == 2 and "Traceback" not in err

"""A workdir belongs to one run (vit_jax.workdir), told by real runs of
`python -m vit_jax.main`: a second job on a busy workdir stops, a resume
that changes the run stops with the changes, and a disk that fills up stops
the run at the failed save with every earlier checkpoint intact."""

import contextlib
import os
import re
import signal
import subprocess
import sys

import numpy as np
from test_faults import _saved_steps
from test_train_errors import _testing_config
from test_train_runs import REPO, finish, load_npz, main_command, start, subprocess_env, wait_for

from vit_jax import train


def _run(command, env=None):
    return subprocess.run(
        command, cwd=REPO, env=env or subprocess_env(), capture_output=True, text=True, timeout=300
    )


def _one_error(process) -> str:
    """The single 'Error: ' message of a run that failed as a user error."""
    err = process.stderr
    assert process.returncode == 1, f"exit {process.returncode}:\n{err[-3000:]}"
    assert "Traceback" not in process.stdout + err, err[-3000:]
    messages = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(messages) == 1, err[-3000:]
    return messages[0]


def test_a_second_job_on_a_busy_workdir_stops_and_the_first_goes_on(tmp_path):
    workdir = tmp_path / "run"
    first_log = tmp_path / "first.log"
    first = start(
        main_command(workdir, "--config.total_steps=100000", "--config.checkpoint_every=20"),
        first_log,
    )
    wait_for((workdir / "checkpoints" / "20").exists, first, what="the first checkpoint")

    second = _run(main_command(workdir, "--config.seed=1"))
    message = _one_error(second)
    assert re.search(rf"is in use by another run: PID {first.pid} on host \S+, started ", message)
    assert "use another --workdir" in message

    first.send_signal(signal.SIGTERM)
    log = finish(first, first_log, timeout=120)
    last = int(re.search(r"SIGTERM: saved a checkpoint at step (\d+)", log).group(1))
    assert _saved_steps(workdir)[-1] == last  # The first run's checkpoints, still its own.
    assert not (workdir / "lock.json").exists()  # Released on the way out.


def test_a_resume_that_changes_what_is_computed_stops_with_the_changes(tmp_path):
    workdir = tmp_path / "run"
    train.train_and_evaluate(_testing_config(export_npz=False), str(workdir))
    changes = ["--config.total_steps=8", "--config.seed=1", "--config.model.dropout_rate=0.1"]

    refused = _run(main_command(workdir, *changes, "--config.log_every=4"))
    message = _one_error(refused)
    for change in ["model.dropout_rate (absent) → 0.1", "seed 0 → 1", "total_steps 6 → 8"]:
        assert change in message, message
    assert "log_every" not in message  # Reporting only: allowed.
    assert "--config.resume_changes=allow" in message
    assert _saved_steps(workdir) == [4, 6]

    allowed = _run(main_command(workdir, *changes, "--config.resume_changes=allow"))
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "Resuming with changes (config.resume_changes=allow): model.dropout_rate" in (
        allowed.stderr
    )
    assert "Final test accuracy after 8 steps" in allowed.stdout
    # The record now holds the resumed run: the same command resumes silently.
    again = _run(main_command(workdir, *changes))
    assert again.returncode == 0 and "Resuming with changes" not in again.stderr


# Runs vit_jax.main with orbax's final rename (tmp dir → <step>) of one step
# failing as a full disk does: where no small filesystem can be mounted.
_FULL_DISK_AT_SAVE = """
import errno, os, sys
from orbax.checkpoint._src.path import async_path

_rename = async_path.rename

async def rename(src, dst):
    if dst.name == os.environ["FULL_DISK_AT_STEP"] and dst.parent.name == "checkpoints":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
    return await _rename(src, dst)

async_path.rename = rename
from vit_jax import errors, main
sys.argv[0] = "vit_jax.main"
errors.run_absl_app(main.main)
"""


@contextlib.contextmanager
def _small_filesystem(directory, size: str):
    """A tmpfs of `size` mounted at `directory`, or None where mounting is not
    allowed (not root)."""
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
    )
    try:
        yield mounted.returncode == 0
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(directory)], check=True)


def test_a_full_disk_stops_at_the_failed_save_and_the_run_resumes_bit_identical(tmp_path):
    total = ["--config.total_steps=10", "--config.checkpoint_every=2"]
    total += ["--config.keep_checkpoints=100"]  # Every checkpoint takes more space.
    reference = start(main_command(tmp_path / "ref", *total), tmp_path / "ref.log")
    # A checkpoint of the 'testing' model takes about 440 kB: 1.2 MB holds two.
    with _small_filesystem(tmp_path / "small", "1200k") as mounted:
        workdir = tmp_path / "small" / "run"
        args = main_command(workdir, *total)
        if mounted:
            failed = _run(args)
        else:
            env = {**subprocess_env(), "FULL_DISK_AT_STEP": "6"}
            failed = _run([sys.executable, "-c", _FULL_DISK_AT_SAVE, *args[3:]], env)
        message = _one_error(failed)
        step = int(re.search(r"saving the checkpoint of step (\d+) failed: ", message).group(1))
        assert "No space left on device" in message, message
        saved = _saved_steps(workdir)
        assert saved == list(range(2, step, 2)) and saved, (saved, step)
        assert f"The last good checkpoint is step {step - 2} in " in message
        assert not [p for p in os.listdir(workdir / "checkpoints") if "tmp" in p]
        # Saves run in the background: a failure surfaces by the next save at the
        # latest, and the run ends there, before its evaluation and export.
        assert f"step {step + 3}/" not in failed.stderr
        assert "Final test accuracy" not in failed.stdout + failed.stderr
        assert not (workdir / "params.npz").exists()

        if mounted:  # Space freed.
            subprocess.run(["mount", "-o", "remount,size=50m", str(tmp_path / "small")], check=True)
        resumed = _run(args)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert re.search(rf"Resumed from \S+ at step {step - 2}\.", resumed.stderr)
        finish(reference, tmp_path / "ref.log")
        expected, got = load_npz(tmp_path / "ref" / "params.npz"), load_npz(workdir / "params.npz")
        assert expected.keys() == got.keys()
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)

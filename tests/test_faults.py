"""Runs that meet faults: a diverging loss, damaged checkpoints, a SIGKILL in
the middle of a save. Each ends with the workdir still resumable."""

import os
import re
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from test_train_errors import _testing_config
from test_train_runs import REPO, finish, main_command, subprocess_env

from vit_jax import sharding, train
from vit_jax.errors import NonFiniteError, UserError
from vit_jax.step import FINITE_KEY, build_trainer
from vit_jax.train_state import UNRESTORABLE_SUFFIX


def _saved_steps(workdir) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _saved_state(workdir, step) -> dict:
    """The arrays of checkpoint `step`, read without a target tree."""
    path = workdir / "checkpoints" / str(step) / "state"
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path)


def _truncate_data_files(checkpoint_dir) -> None:
    """Cuts every array data file of a checkpoint to 10 bytes (a disk that
    filled up, a copy that stopped half-way)."""
    for root, _, names in os.walk(checkpoint_dir):
        if os.path.basename(root) == "d":
            for name in names:
                os.truncate(os.path.join(root, name), 10)


def test_a_diverging_run_stops_and_keeps_only_finite_checkpoints(tmp_path):
    config = _testing_config(
        lr=1e6, grad_clip_norm=0.0, total_steps=40, log_every=10, checkpoint_every=2
    )
    with pytest.raises(NonFiniteError) as error:
        train.train_and_evaluate(config, str(tmp_path))
    message = str(error.value)
    first_bad = int(re.search(r"not finite at step (\d+)", message).group(1))
    assert "Lower config.lr" in message and "config.grad_clip_norm" in message
    assert "warmup_steps" in message
    saved = _saved_steps(tmp_path)
    assert saved and max(saved) < first_bad, (saved, first_bad)
    assert f"step {max(saved)}" in message
    for step in saved:
        leaves = jax.tree.leaves(_saved_state(tmp_path, step))
        assert all(np.all(np.isfinite(leaf)) for leaf in leaves), step
    assert not (tmp_path / "params.npz").exists()


def test_skip_nonfinite_leaves_the_state_unchanged_and_counts_the_step():
    config = _testing_config(skip_nonfinite=True, total_steps=10, batch_size=8, warmup_steps=0)
    mesh = sharding.make_mesh(config.mesh)
    trainer = build_trainer(config, 10, (8, 8, 1), mesh)
    state = trainer.init_state(0)
    good = {
        "image": jnp.zeros((8, 8, 8, 1)),
        "labels": jax.nn.one_hot(jnp.arange(8) % 10, 10),
    }
    poisoned = {**good, "image": good["image"].at[0, 0, 0, 0].set(jnp.nan)}
    before = jax.device_get(state.params)
    state, metrics = trainer.train_step(state, poisoned)
    assert not bool(metrics[FINITE_KEY])
    assert int(state.step) == 1  # The data position moves on.
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), before)
    state, metrics = trainer.train_step(state, good)
    assert bool(metrics[FINITE_KEY])
    changed = jax.tree.map(
        lambda a, b: not np.array_equal(a, b), jax.device_get(state.params), before
    )
    assert any(jax.tree.leaves(changed))

    watch = train.FinitenessWatch(skip=True, checkpoint_dir="unused")
    for step, finite in [(1, False), (2, True), (3, False)]:
        watch.add(step, jnp.asarray(finite))
    assert watch.check([]) == 2 and watch.skipped_total == 2
    watch.add(4, jnp.asarray(False))
    with pytest.raises(NonFiniteError, match="every step from 4 to 4 .* was skipped"):
        watch.check([])  # Nothing but skipped steps: stop rather than spin.


def test_a_truncated_newest_checkpoint_resumes_from_the_previous_one(tmp_path):
    train.train_and_evaluate(_testing_config(export_npz=False), str(tmp_path))
    assert _saved_steps(tmp_path) == [4, 6]
    _truncate_data_files(tmp_path / "checkpoints" / "6")

    command = main_command(tmp_path, "--config.total_steps=8", "--config.resume_changes=allow")
    resumed = subprocess.run(
        command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert "Final test accuracy after 8 steps" in log
    assert re.search(r"Checkpoint \S+/checkpoints/6 does not restore: \w+: .*OUT_OF_RANGE", log)
    assert "Resuming from step 4, the newest checkpoint" in log
    # The one warning, without the tracebacks of orbax's reading threads.
    assert "Traceback" not in log and "Event loop is closed" not in log, log[-3000:]
    # Kept, not deleted, and out of the way of the new step 6.
    assert (tmp_path / "checkpoints" / f"6{UNRESTORABLE_SUFFIX}").is_dir()
    assert _saved_steps(tmp_path) == [6, 8]


# Run in a fresh interpreter, whose asyncio logger has no filter yet.
_UNRETRIEVED_TASK = """
import asyncio, gc, logging, sys
from vit_jax.train_state import Checkpoints
Checkpoints(sys.argv[2], keep=1)  # Any run's checkpoints: they install the filter.
namespace = {}
source = "async def read():\\n    raise ValueError('OUT_OF_RANGE')\\n"
exec(compile(source, sys.argv[1], "exec"), namespace)
records = []
handler = logging.Handler()
handler.emit = records.append
logging.getLogger("asyncio").addHandler(handler)
loop = asyncio.new_event_loop()
task = loop.create_task(namespace["read"]())
loop.run_until_complete(asyncio.sleep(0))
loop.close()
del task
gc.collect()
for record in records:
    print(record.getMessage().splitlines()[0])
"""


def _unretrieved_task_lines(filename: str, checkpoint_dir) -> list[str]:
    """What asyncio logs, in a process with a run's checkpoints, when it
    collects a failed task nobody awaited, for an exception raised in code
    from `filename` (as orbax's other reads of a damaged checkpoint are)."""
    result = subprocess.run(
        [sys.executable, "-c", _UNRETRIEVED_TASK, filename, str(checkpoint_dir)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.splitlines()


def test_asyncio_tracebacks_of_orbax_reads_are_kept_out_and_others_shown(tmp_path):
    orbax_file = os.path.join(os.path.dirname(ocp.__file__), "_src", "serialization", "read.py")
    assert _unretrieved_task_lines(orbax_file, tmp_path / "a") == []
    shown = _unretrieved_task_lines(os.path.join(REPO, "user_code.py"), tmp_path / "b")
    assert shown == ["Task exception was never retrieved"]


def test_no_checkpoint_that_restores_is_one_error_and_nothing_is_moved(tmp_path):
    train.train_and_evaluate(_testing_config(export_npz=False), str(tmp_path))
    checkpoints = tmp_path / "checkpoints"
    _truncate_data_files(checkpoints / "6")
    for path in sorted((checkpoints / "4" / "state").iterdir()):
        if path.is_file():
            path.unlink()  # Missing files.
    with pytest.raises(UserError, match=r"No checkpoint in \S+ restores \(step 6: .*; step 4: "):
        train.train_and_evaluate(
            _testing_config(total_steps=8, resume_changes="allow"), str(tmp_path)
        )
    assert _saved_steps(tmp_path) == [4, 6]


# Runs vit_jax.main with orbax's final rename (tmp dir → <step>) replaced by a
# SIGKILL for one step: every byte of that checkpoint is written, none committed.
_KILL_IN_SAVE = """
import os, signal, sys
from orbax.checkpoint._src.path import async_path

_rename = async_path.rename

async def rename(src, dst):
    if dst.name == os.environ["KILL_IN_SAVE_OF_STEP"] and dst.parent.name == "checkpoints":
        os.kill(os.getpid(), signal.SIGKILL)
    return await _rename(src, dst)

async_path.rename = rename
from absl import app
from vit_jax import main
sys.argv[0] = "vit_jax.main"
app.run(main.main)
"""


def test_a_run_killed_inside_a_save_resumes(tmp_path):
    workdir = tmp_path / "run"
    args = main_command(workdir, "--config.total_steps=8")[3:]  # After `python -m vit_jax.main`.
    env = {**subprocess_env(), "KILL_IN_SAVE_OF_STEP": "4"}
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_IN_SAVE, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    leftovers = os.listdir(workdir / "checkpoints")
    assert _saved_steps(workdir) == [2], leftovers
    assert any(name.startswith("4.") for name in leftovers), leftovers  # Killed mid-save.

    log_path = tmp_path / "resumed.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            main_command(workdir, "--config.total_steps=8"),
            cwd=REPO,
            env=subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    log = finish(process, log_path)
    assert re.search(r"Resumed from \S+ at step 2\.", log)
    assert "Final test accuracy after 8 steps" in log
    assert _saved_steps(workdir) == [6, 8]

"""Whole runs of `python -m vit_jax.main` in subprocesses: exact resume after
SIGKILL (the dead run's lock taken over), a clean checkpointed exit on SIGTERM
(preemption), and on Ctrl-C, after which the run resumes exactly."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config.log_every=10",
    "--config.eval_batch_size=120",  # Digits' test split is 360 images: 3 batches.
]


def main_command(workdir, *overrides):
    return [
        sys.executable,
        "-m",
        "vit_jax.main",
        "--config=configs/testing.py",
        f"--workdir={workdir}",
        *TINY,
        *overrides,
    ]


def subprocess_env(num_devices: int = 1) -> dict:
    env = dict(os.environ)
    # conftest's flags for the suite, with this run's device count.
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
    env["XLA_FLAGS"] = " ".join([*flags, f"{DEVICE_COUNT_FLAG}={num_devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO
    return env


def start(command, log_path, env=None):
    log = open(log_path, "w")  # noqa: SIM115 - closed by the caller via the process.
    return subprocess.Popen(
        command, cwd=REPO, env=env or subprocess_env(), stdout=log, stderr=subprocess.STDOUT
    )


def finish(process, log_path, timeout=300):
    """Waits for `process`; on failure the assertion shows the log's tail."""
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    with open(log_path) as f:
        log = f.read()
    assert process.returncode == 0, f"exit {process.returncode}:\n{log[-4000:]}"
    return log


def load_npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def wait_for(predicate, process, timeout=300, what="condition"):
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    total = ["--config.total_steps=400", "--config.checkpoint_every=50"]
    # The reference run and the run to be killed share the 2 cores.
    reference = start(main_command(tmp_path / "ref", *total), tmp_path / "ref.log")
    killed_dir = tmp_path / "killed"
    victim = start(main_command(killed_dir, *total), tmp_path / "killed.log")
    first_checkpoint = killed_dir / "checkpoints" / "50"  # Renamed into place when complete.
    wait_for(first_checkpoint.exists, victim, what="the first checkpoint")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_dir / "params.npz").exists(), "the run finished before it was killed"

    log = finish(
        start(main_command(killed_dir, *total), tmp_path / "resumed.log"), tmp_path / "resumed.log"
    )
    resumed_from = int(re.search(r"Resumed from .* at step (\d+)", log).group(1))
    assert 50 <= resumed_from < 400
    assert re.search(
        rf"Took over the lock of \S+ from PID {victim.pid} on host .*: its process", log
    )
    finish(reference, tmp_path / "ref.log")

    expected = load_npz(tmp_path / "ref" / "params.npz")
    got = load_npz(killed_dir / "params.npz")
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_sigterm_saves_the_current_step_and_exits_cleanly(tmp_path):
    workdir = tmp_path / "run"
    log_path = tmp_path / "run.log"
    process = start(
        main_command(workdir, "--config.total_steps=100000", "--config.checkpoint_every=0"),
        log_path,
    )
    wait_for(lambda: "step 20/100000" in log_path.read_text(), process, what="step 20")
    process.send_signal(signal.SIGTERM)
    log = finish(process, log_path, timeout=120)
    step = int(re.search(r"SIGTERM: saved a checkpoint at step (\d+)", log).group(1))
    assert 20 <= step < 100000
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [step]  # checkpoint_every=0: the preemption save is the only one.


def _assert_same_params(path_a, path_b):
    expected, got = load_npz(path_a), load_npz(path_b)
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_ctrl_c_saves_the_step_and_the_run_resumes_bit_identical(tmp_path):
    total = ["--config.total_steps=300", "--config.checkpoint_every=0"]
    reference = start(main_command(tmp_path / "ref", *total), tmp_path / "ref.log")
    workdir, log_path = tmp_path / "run", tmp_path / "run.log"
    process = start(main_command(workdir, *total), log_path)
    wait_for(lambda: "step 20/300" in log_path.read_text(), process, what="step 20")
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    log = log_path.read_text()
    assert process.returncode == 130, f"exit {process.returncode}:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    step = int(re.search(r"Ctrl-C: saved a checkpoint at step (\d+); run the same", log).group(1))
    assert 20 <= step < 300

    log = finish(start(main_command(workdir, *total), log_path), log_path)
    assert re.search(rf"Resumed from \S+ at step {step}\.", log)
    finish(reference, tmp_path / "ref.log")
    _assert_same_params(tmp_path / "ref" / "params.npz", workdir / "params.npz")
    # One console line per event: no second copy of the scalars or hyper-parameters.
    logged_steps = re.findall(r"step (\d+)/300 ", log)
    assert logged_steps and len(logged_steps) == len(set(logged_steps)), logged_steps
    assert log.count("Dataset digits[test]") == 1  # One evaluation, params and EMA alike.
    assert "train/loss=" not in log and "Hyperparameters" not in log
    assert max(len(line) for line in log.splitlines()) < 400


# A script that trains in-process, as a notebook or a study does, and sends
# itself SIGTERM at one moment of the run's end.
_SIGNAL_AT_THE_END = """
import dataclasses, os, signal, sys
from configs import testing
from vit_jax import train

moment, workdir = sys.argv[1], sys.argv[2]
config = testing.get_config()
config.eval_every = 0  # The final evaluation is the only one.

def preempt():
    os.kill(os.getpid(), signal.SIGTERM)

build_trainer, evaluate = train.build_trainer, train.evaluate

def signalling_trainer(*args, **kwargs):
    trainer = build_trainer(*args, **kwargs)
    calls = []

    def train_step(state, batch):
        calls.append(1)
        if moment == "last step" and len(calls) == config.total_steps:
            preempt()
        return trainer.train_step(state, batch)

    return dataclasses.replace(trainer, train_step=train_step)

def signalling_evaluate(*args, **kwargs):
    if moment == "final evaluation":
        preempt()
    return evaluate(*args, **kwargs)

train.build_trainer, train.evaluate = signalling_trainer, signalling_evaluate
train.train_and_evaluate(config, workdir)
print("the caller went on to its next run", flush=True)
"""


@pytest.mark.parametrize("moment", ["last step", "final evaluation"])
def test_sigterm_at_the_end_finishes_the_run_then_stops_its_caller(tmp_path, moment):
    """A SIGTERM that comes after the loop's last look is not lost: the run
    finishes (evaluated, exported), then the signal stops the process, so a
    script training run after run does not go on as if nothing was asked."""
    workdir, log_path = tmp_path / "run", tmp_path / "run.log"
    process = start([sys.executable, "-c", _SIGNAL_AT_THE_END, moment, str(workdir)], log_path)
    process.wait(timeout=300)
    log = log_path.read_text()
    assert process.returncode == -signal.SIGTERM, f"exit {process.returncode}:\n{log[-3000:]}"
    assert "Final test accuracy after 6 steps" in log, log[-3000:]
    assert (workdir / "params.npz").exists()
    assert "SIGTERM after the last step: the run is complete; stopping as asked." in log
    assert "the caller went on" not in log

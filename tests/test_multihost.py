"""Multi-host for real: 2 processes on localhost (jax.distributed with a local
coordinator, gloo CPU collectives), 2 simulated devices each, each reading
half of every batch, end in the same params as one process with 4 devices."""

import socket

import numpy as np
from test_train_runs import finish, load_npz, main_command, start, subprocess_env

RUN = [
    "--config.mesh=(('data', 2), ('fsdp', 2))",  # FSDP spans the processes' devices.
    "--config.total_steps=3",
    "--config.checkpoint_every=0",
    "--config.ema_decay=0.9",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
    single = start(
        main_command(tmp_path / "single", *RUN), tmp_path / "single.log", subprocess_env(4)
    )
    coordinator = f"--coordinator_address=127.0.0.1:{_free_port()}"
    workers = [
        start(
            main_command(
                tmp_path / "multi", *RUN, coordinator, "--num_processes=2", f"--process_id={i}"
            ),
            tmp_path / f"worker{i}.log",
            subprocess_env(2),
        )
        for i in range(2)
    ]
    logs = [finish(w, tmp_path / f"worker{i}.log") for i, w in enumerate(workers)]
    finish(single, tmp_path / "single.log")
    assert "Process 1 of 2, 2 local / 4 global devices" in logs[1]
    assert "process 1/2 reads 8 per step" in logs[1]  # Half of the batch of 16.

    for name in ("params.npz", "params_ema.npz"):
        expected = load_npz(tmp_path / "single" / name)
        got = load_npz(tmp_path / "multi" / name)
        assert expected.keys() == got.keys()
        for key in expected:  # atol: see test_sharding (the key bias' zero gradient).
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)

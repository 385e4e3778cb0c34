"""Command line: `python -m vit_jax.main --config=configs/demo.py --workdir=DIR`.

Only parses flags; vit_jax.train owns the loop. Any config field can be
overridden (`--config.total_steps=100`), and so can any option of the model,
listed in the config file or not (`--config.model.remat=True`); a field or
option that does not exist is one message before anything starts, as is any
other user error (vit_jax.errors). Rerunning the same command resumes from
the newest checkpoint in --workdir that restores; Ctrl-C saves the current
step first (exit status 130). --help exits 0.

Multi-host: `jax.distributed.initialize()` is called when --multihost is set,
when --coordinator_address is given, or (by default) when the job runs under
SLURM with several tasks, on a multi-host TPU slice, or with
JAX_COORDINATOR_ADDRESS set. See docs/training.md.
"""

import logging as std_logging
import os
import sys

import jax
from absl import flags, logging
from ml_collections import config_flags

from vit_jax import errors

# New attributes are accepted so that `--config.model.<option>` works for options
# the file leaves at their defaults; vit_jax.config.check_config then rejects
# unknown fields and options by name (with the model's list of options).
_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "A config file (configs/*.py[:arg]).",
    lock_config=False,
    accept_new_attributes=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and exports go here.")
_MULTIHOST = flags.DEFINE_enum(
    "multihost", "auto", ["auto", "yes", "no"], "Call jax.distributed.initialize() first."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for clusters jax does not detect."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --coordinator_address.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --coordinator_address.")
flags.mark_flags_as_required(["config", "workdir"])


def _looks_multihost() -> bool:
    """The environments where jax.distributed.initialize() finds its peers itself."""
    env = os.environ
    slurm = int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1
    tpu_pod = "," in env.get("TPU_WORKER_HOSTNAMES", "")
    return slurm or tpu_pod or "JAX_COORDINATOR_ADDRESS" in env


def _initialize_distributed() -> None:
    if _COORDINATOR.value:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    elif _MULTIHOST.value == "yes" or (_MULTIHOST.value == "auto" and _looks_multihost()):
        jax.distributed.initialize()
    else:
        return
    logging.info(
        "Process %d of %d, %d local / %d global devices.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def _quiet_libraries(record) -> bool:
    """Keeps orbax's and jax's per-save INFO chatter out of the console, and
    the tracebacks orbax's background threads log for a failed read or write,
    which the loop reports itself in one message (vit_jax.train_state, which
    also drops asyncio's copies of them). Their other warnings and errors
    still show."""
    noisy = ("/orbax/", "/jax/_src/")
    if not any(n in record.pathname for n in noisy):
        return True
    return record.levelno >= std_logging.WARNING and record.exc_info is None


def _quiet_closed_event_loops(unraisable) -> None:
    """Reading a damaged checkpoint leaves orbax's asyncio callbacks behind on a
    loop that has closed; Python prints an 'Event loop is closed' traceback for
    each one it collects. The checkpoint's one warning already says what
    happened; anything else still prints."""
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def _config():
    """The config file's config; a file that does not load is a usage error."""
    try:
        config = _CONFIG.value
        config.keys()  # The file loads on first use.
        return config
    except OSError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise errors.UsageError(
            f"--config={flags.FLAGS['config'].config_filename} does not load "
            f"({lines[-1] if lines else error}): give a config file such as configs/demo.py."
        ) from None


@errors.cli
def main(argv):
    if len(argv) > 1:
        raise errors.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().python_handler.addFilter(_quiet_libraries)
    sys.unraisablehook = _quiet_closed_event_loops
    config = _config()
    _initialize_distributed()
    from vit_jax import train  # After initialize: nothing may touch devices before it.

    train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
    errors.run_absl_app(main)

"""The train state and its orbax checkpoints (asynchronous, keep the last K).

Everything a run needs to continue exactly where it stopped is in the state:
params, optimizer state, EMA params, the step and the root RNG key. The data
position is the step itself: the input pipeline is a pure function of
(seed, step), so resuming at step s reads batch s next.

Next to the state each checkpoint holds a small JSON record of what was
trained (model name and options, parameter shapes), so that a workdir reused
for a different model fails with a clear message instead of a shape error
deep inside orbax.

A save that fails (no space left, an I/O error) raises a CheckpointError
naming the cause and the last good checkpoint as soon as the loop asks
(`check_saves`, every step): the background write is not left to fail
silently while training goes on. The failed write's temporary directory is
removed, so that it holds no space the next run needs.

Resuming reads the newest checkpoint that restores. One that does not
(truncated or missing files, another tree) is named with the reason and
renamed to `<step>.unrestorable` beside the others: kept for inspection, but
out of orbax's way, which would otherwise skip saving that step again and
later rotate the directory out under max_to_keep.
"""

import contextlib
import logging as std_logging
import os
import re
from typing import Any

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from vit_jax.errors import CheckpointError, UserError
from vit_jax.optim import path_name

UNRESTORABLE_SUFFIX = ".unrestorable"
MAX_REASON_CHARS = 400


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of optimizer updates applied.
    params: Any
    opt_state: Any
    ema_params: Any  # Polyak average of params; None when config.ema_decay is 0.
    rng: jax.Array  # uint32[2] root key; step keys are fold_in(rng, step).


def describe_params(model_name: str, model_overrides: dict, params) -> dict:
    """The JSON record saved beside each checkpoint (see the module doc)."""
    shapes = jax.tree_util.tree_flatten_with_path(params)[0]
    return {
        "model_name": model_name,
        "model": {k: repr(v) for k, v in sorted(model_overrides.items())},
        "param_shapes": {path_name(path): list(np.shape(leaf)) for path, leaf in shapes},
    }


def check_same_model(saved: dict, current: dict, directory: str) -> None:
    """Raises a UserError naming the difference when a checkpoint in
    `directory` was written for another model than the one configured. Other
    options of the same model are the run record's to compare
    (vit_jax.workdir), which config.resume_changes='allow' lets through."""
    fix = f"use a fresh --workdir, or delete {directory} to start over."
    if saved["model_name"] != current["model_name"]:
        raise UserError(
            f"{directory} holds a checkpoint of model {saved['model_name']} {saved['model']}, "
            f"but the config asks for {current['model_name']} {current['model']}: {fix}"
        )
    if saved["param_shapes"] != current["param_shapes"]:
        saved_shapes, shapes = saved["param_shapes"], current["param_shapes"]
        changed = sorted(
            k for k in saved_shapes.keys() | shapes.keys() if saved_shapes.get(k) != shapes.get(k)
        )
        details = ", ".join(f"{k}: {saved_shapes.get(k)} → {shapes.get(k)}" for k in changed[:5])
        raise UserError(
            f"{directory} holds a checkpoint whose parameter shapes differ from this config's "
            f"({details}; e.g. another image size or number of classes): {fix}"
        )


def _raised_outside_orbax(record: std_logging.LogRecord) -> bool:
    """The filter Checkpoints puts on asyncio's logger. When a save fails (a
    full disk) or a damaged checkpoint is read, orbax's other writes or reads
    fail alike in its event loop, and asyncio logs each one nobody awaited,
    with a traceback, when it collects it (at a moment that depends on the
    machine's load); the loop reports the failure itself in one message. Those
    are dropped; asyncio's other records pass."""
    traceback = record.exc_info[2] if record.exc_info else None
    while traceback is not None:
        if "/orbax/" in traceback.tb_frame.f_code.co_filename:
            return False
        traceback = traceback.tb_next
    return True


class Checkpoints:
    """Orbax checkpoints of a TrainState under `directory`/<step>/."""

    def __init__(self, directory: str, *, keep: int, asynchronous: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=asynchronous, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        asyncio_log = std_logging.getLogger("asyncio")
        if _raised_outside_orbax not in asyncio_log.filters:
            asyncio_log.addFilter(_raised_outside_orbax)
        self._unconfirmed: int | None = None  # The step of a save not known to be on disk.
        self._failed = False

    @staticmethod
    def latest_step_in(directory: str) -> int:
        """The step of the newest complete checkpoint under `directory`, 0 if none.
        (Orbax writes into a temporary name and renames when done, so a plain
        number is a complete checkpoint.)"""
        path = epath.Path(directory)  # Local paths and gs:// alike.
        if not path.is_dir():
            return 0
        return max((int(p.name) for p in path.iterdir() if p.name.isdigit()), default=0)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def saved_steps(self) -> list[int]:
        """The steps of the checkpoints kept (those being written included)."""
        return list(self._manager.all_steps())

    def save(self, state: TrainState, description: dict) -> None:
        """Starts writing `state` in the background (the device→host copy is
        done before this returns, so the caller may donate `state` next)."""
        step = int(state.step)
        if step in self._manager.all_steps():
            return  # Already saved, e.g. the final save right after a periodic one.
        with self._failures_told(step):
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), description=ocp.args.JsonSave(description)
                ),
                force=True,
            )
        self._unconfirmed = step

    def check_saves(self) -> None:
        """Raises a CheckpointError when a background save has failed; returns
        at once while a save is running or when none is waiting to be confirmed."""
        if self._unconfirmed is not None and not self._manager.is_saving_in_progress():
            self.wait()

    @contextlib.contextmanager
    def _failures_told(self, step: int):
        """Turns a failed save (this `step`'s, or the background one of an
        earlier step, which surfaces here) into one CheckpointError."""
        try:
            yield
        except UserError:
            raise
        except Exception as error:  # Orbax, tensorstore and the OS raise many kinds.
            failed = self._unconfirmed if self._unconfirmed is not None else step
            self._failed = True
            for path in epath.Path(self.directory).glob(f"{failed}.orbax-checkpoint-tmp*"):
                with contextlib.suppress(OSError):
                    path.rmtree()
            last_good = self.latest_step_in(self.directory)
            kept = (
                f"The last good checkpoint is step {last_good} in {self.directory}; it and "
                "the earlier ones are intact."
                if last_good
                else "No checkpoint was written before it."
            )
            raise CheckpointError(
                f"saving the checkpoint of step {failed} failed: {_save_failure_cause(error)}. "
                f"The run stopped there. {kept} Free space (or fix the disk) and run the same "
                "command to resume."
            ) from None

    def restore(self, abstract_state: TrainState, description: dict, step: int | None = None):
        """The state saved at `step` (default: the latest), laid out like
        `abstract_state` (ShapeDtypeStructs carrying the target shardings)."""
        step = self.latest_step() if step is None else step
        saved = self._manager.restore(
            step, args=ocp.args.Composite(description=ocp.args.JsonRestore())
        )["description"]
        check_same_model(saved, description, self.directory)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        )
        return restored["state"]

    def restore_newest(self, abstract_state: TrainState, description: dict):
        """The newest checkpoint that restores, or None when there are none.

        A checkpoint that does not restore is named with the reason and moved
        to `<step>.unrestorable` once an older one has restored (see the module
        doc). A checkpoint of another model is the config's problem, not the
        file's: that raises at once. When none restores, a UserError lists them.
        """
        failures = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                state = self.restore(abstract_state, description, step)
            except UserError:
                raise
            except Exception as error:  # Orbax, tensorstore and JSON raise many kinds.
                reason = _first_line(error)
                logging.warning(
                    "Checkpoint %s does not restore: %s",
                    os.path.join(self.directory, str(step)),
                    reason,
                )
                failures.append((step, reason))
                continue
            if failures:
                moved = [self._set_aside(bad) for bad, _ in failures]
                logging.warning(
                    "Resuming from step %d, the newest checkpoint in %s that restores; "
                    "the newer one(s) that do not are kept as %s.",
                    step,
                    self.directory,
                    ", ".join(moved),
                )
            return state
        if not failures:
            return None
        listing = "; ".join(f"step {step}: {reason}" for step, reason in failures)
        raise UserError(
            f"No checkpoint in {self.directory} restores ({listing}). They are left in place: "
            "move them aside (or use a fresh --workdir) to start over."
        )

    def _set_aside(self, step: int) -> str:
        """Renames checkpoint `step` out of the manager's view; returns the new name."""
        source = epath.Path(self.directory) / str(step)
        target = source.parent / f"{step}{UNRESTORABLE_SUFFIX}"
        if jax.process_index() == 0:
            if target.exists():  # An earlier resume set this step aside already.
                target = source.parent / f"{step}{UNRESTORABLE_SUFFIX}.{os.getpid()}"
            source.rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self._manager.reload()
        return target.name

    def wait(self) -> None:
        """Blocks until every save started so far is on disk."""
        with self._failures_told(self._unconfirmed or 0):
            self._manager.wait_until_finished()
        self._unconfirmed = None

    def close(self) -> None:
        if self._failed:  # Already told; orbax would only repeat it.
            with contextlib.suppress(Exception):
                self._manager.close()
        else:
            self._manager.close()


def _first_line(error: Exception) -> str:
    """`error` in one line: its type and the first line that says something."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0] if lines else "(no message)"
    line = line.split(" [tensorstore_spec", 1)[0]  # Tensorstore appends its whole JSON spec.
    if len(line) > MAX_REASON_CHARS:
        line = line[: MAX_REASON_CHARS - 3] + "..."
    return f"{type(error).__name__}: {line}"


def _save_failure_cause(error: Exception) -> str:
    """The OS's reason for a failed save when there is one ('No space left on
    device'), else the error's first line."""
    code = re.search(r"os_error_code='?(\d+)", str(error))  # Tensorstore's wording.
    if code:
        return os.strerror(int(code.group(1)))
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return _first_line(error)

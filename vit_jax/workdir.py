"""A workdir belongs to one run: the checks and records that keep it so.

- `prepare_writable(workdir)`: the workdir exists, is a directory and takes
  a write, before any long work; otherwise one message says which and why.
- `holding_lock(workdir)` (`lock.json`, a `WorkdirLock`): one writer at a
  time. Process 0 of a job holds it (the other processes of the same job
  write their shards beside it); a second job on the same workdir stops at
  once, naming the holder. A lock whose process is gone (same host) or whose
  lease ran out (another host: the holder renews it every minute) is taken
  over, saying so.
- `RunRecord` (`run.json`): the config the run was started with, and the
  attention back-end it chose. A resume compares the config with it: a
  change to a field that changes what is computed stops the run with the
  list of changes, unless config.resume_changes='allow'; a change to a
  field that only changes reporting (vit_jax.config.REPORTING_FIELDS) is
  logged. It is also the run's hyper-parameters, readable without TensorBoard.
- `remove_unfinished_saves(directory)`: the temporary directories of
  checkpoint writes that never finished (a full disk, a killed process),
  which would otherwise hold the space a resumed run needs.
"""

import contextlib
import datetime
import json
import os
import shutil
import socket
import threading
import time

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from vit_jax.config import REPORTING_FIELDS, default_config
from vit_jax.errors import UserError

LOCK_NAME = "lock.json"
RECORD_NAME = "run.json"
# A holder on another host renews its lock every RENEW_SECONDS; one not renewed
# for LEASE_SECONDS is taken to be gone (its host down, its job killed).
RENEW_SECONDS = 60
LEASE_SECONDS = 600
UNFINISHED_SAVE_MARK = ".orbax-checkpoint-tmp"


def is_local(workdir: str) -> bool:
    """False for gs:// and other remote paths, which have no lock file (their
    stores lack an atomic create) and are checked by their clients."""
    return "://" not in workdir


def prepare_writable(workdir: str) -> None:
    """Creates `workdir` and proves it takes a write, or raises one UserError
    naming the path and the reason (a file in the way, read-only, no permission,
    no space)."""
    if not is_local(workdir):
        return
    fix = "choose another --workdir, or fix the path's permissions or space."
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir} is a file, not a directory: {fix}")
    probe = os.path.join(workdir, f".write_probe.{socket.gethostname()}.{os.getpid()}")
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(probe, "w") as f:
            f.write("probe\n")
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        where = f" ({error.filename})" if error.filename not in (None, probe) else ""
        raise UserError(f"--workdir={workdir} cannot be written: {reason}{where}: {fix}") from None


# ---------------------------------------------------------------- the lock


def _process_start(pid: int) -> str | None:
    """When process `pid` started (ticks since boot; Linux), to tell it from a
    later process that reuses the PID; None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, process_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # Another user's live process.
    return process_start is None or _process_start(pid) in (None, process_start)


def _stale_reason(holder: dict) -> str | None:
    """Why the lock `holder` wrote is no longer held, or None if it is."""
    age = time.time() - holder.get("renewed", 0)
    if holder.get("host") == socket.gethostname():
        if not _alive(holder.get("pid", -1), holder.get("process_start")):
            return f"its process {holder.get('pid')} is gone"
        return None
    if age > LEASE_SECONDS:
        return f"it was last renewed {age / 60:.0f} minutes ago (lease {LEASE_SECONDS // 60} min)"
    return None


def _write_json(path: str, content: dict) -> None:
    """Writes `content` whole or not at all where the path is local (a crash
    leaves the old file)."""
    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    if not is_local(path):
        epath.Path(path).write_text(text)
        return
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w") as f:
        f.write(text)
    os.replace(partial, path)


def _read_json(path: str) -> dict | None:
    """The file's content; None when there is none, {} when it does not parse."""
    try:
        return json.loads(epath.Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


class WorkdirLock:
    """`workdir`/lock.json held by this process until `release`."""

    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
        self._holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "renewed": time.time(),
        }
        self._stop = threading.Event()
        self._renewer = None

    def acquire(self) -> None:
        """Takes the lock, taking over a stale one; raises a UserError naming
        the holder when another run holds it."""
        for _ in range(3):  # Another process may take over a stale lock at the same time.
            if self._create():
                self._renewer = threading.Thread(target=self._renew, daemon=True)
                self._renewer.start()
                return
            holder = _read_json(self.path)
            if holder is None:
                continue  # Released meanwhile.
            reason = "it cannot be read" if not holder else _stale_reason(holder)
            if reason is None:
                raise UserError(self._held_message(holder))
            aside = f"{self.path}.stale.{os.getpid()}"
            try:
                os.rename(self.path, aside)  # Exactly one process wins a takeover.
            except FileNotFoundError:
                continue
            os.remove(aside)
            logging.warning(
                "Took over the lock of %s from %s: %s.",
                os.path.dirname(self.path),
                _describe(holder),
                reason,
            )
        raise UserError(
            f"{self.path} keeps changing hands: another run is starting on this workdir; "
            "use another --workdir."
        )

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self._holder, f, indent=1, sort_keys=True)
            f.write("\n")
        return True

    def _held_message(self, holder: dict) -> str:
        workdir = os.path.dirname(self.path)
        return (
            f"{workdir} is in use by another run: {_describe(holder)}. Wait for it to end, "
            f"stop it, or use another --workdir. If that run is gone (its host down), "
            f"delete {self.path}."
        )

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            if not self._held():
                logging.warning("%s was taken over by another run.", self.path)
                return
            self._holder["renewed"] = time.time()
            with contextlib.suppress(OSError):  # A full disk: the next renewal retries.
                _write_json(self.path, self._holder)

    def _held(self) -> bool:
        holder = _read_json(self.path) or {}
        mine = ("host", "pid", "process_start")
        return all(holder.get(k) == self._holder[k] for k in mine)

    def release(self) -> None:
        self._stop.set()
        if self._held():
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)


def _describe(holder: dict) -> str:
    return (
        f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')}"
    )


@contextlib.contextmanager
def holding_lock(workdir: str):
    """Holds `workdir`'s lock for the block: process 0 takes it and tells the
    other processes of the job whether it could (so that all of them stop)."""
    lock = WorkdirLock(workdir) if jax.process_index() == 0 and is_local(workdir) else None
    problem = None
    if lock is not None:
        try:
            lock.acquire()
        except UserError as error:
            problem = error
    if jax.process_count() > 1:
        failed = multihost_utils.broadcast_one_to_all(np.int32(problem is not None))
        if failed and problem is None:
            raise UserError(f"process 0 could not lock {workdir}; its message says why.")
    if problem is not None:
        raise problem
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


# ---------------------------------------------------------------- the run record


def _flat_fields(config) -> dict:
    """The config's fields as JSON values, nested dicts flattened to
    'model.hidden_size' (tuples become lists, as they do in run.json)."""
    flat = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            for inner, inner_value in _flat_fields(value).items():
                flat[f"{key}.{inner}"] = inner_value
        else:
            flat[key] = json.loads(json.dumps(value, default=str))
    return flat


def _backend(attention: str) -> str:
    """'XLA's attention' of 'XLA's attention (8 cpu device(s))'."""
    return attention.split(" (", 1)[0]


class RunRecord:
    """`workdir`/run.json: what the run computes (see the module doc)."""

    def __init__(self, workdir: str):
        directory = os.path.abspath(workdir) if is_local(workdir) else workdir
        self.path = os.path.join(directory, RECORD_NAME)

    def start_or_check(self, config, attention: str, resuming: bool) -> None:
        """Records a new run, or checks that a resumed one computes what was
        started (raising a UserError that lists the changes when it does not)."""
        fields = _flat_fields(config)
        saved = _read_json(self.path) if resuming else None
        if resuming and not saved:
            logging.warning(
                "%s has checkpoints but no readable %s: resuming without comparing configs.",
                os.path.dirname(self.path),
                RECORD_NAME,
            )
        if saved:
            self._compare(saved, fields, attention, config.resume_changes)
        record = {
            "config": fields,
            "attention": attention,
            "started": (saved or {}).get("started")
            or datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        if jax.process_index() == 0:
            _write_json(self.path, record)

    def _compare(self, saved: dict, fields: dict, attention: str, resume_changes: str) -> None:
        # A field newer than the record was computed at its default before it existed.
        old = {**_flat_fields(default_config()), **saved.get("config", {})}
        changed = [k for k in sorted(old.keys() | fields.keys()) if old.get(k) != fields.get(k)]
        computing = [k for k in changed if k.split(".")[0] not in REPORTING_FIELDS]
        reporting = [k for k in changed if k not in computing]
        if reporting:
            logging.info("Resuming with new reporting settings: %s.", _diff(old, fields, reporting))
        if computing and resume_changes != "allow":
            raise UserError(
                f"{os.path.dirname(self.path)} holds a run started with another config "
                f"({self.path}); resuming would continue a different run: "
                f"{_diff(old, fields, computing)}. Run the command it was started with, "
                "use another --workdir, or pass --config.resume_changes=allow to resume "
                "with these changes."
            )
        if computing:
            logging.warning(
                "Resuming with changes (config.resume_changes=allow): %s.",
                _diff(old, fields, computing),
            )
        before = saved.get("attention")
        if before and _backend(before) != _backend(attention):
            logging.warning(
                "This resume computes attention with %s where the run so far used %s: "
                "its result will not be bit-identical to a run that never stopped.",
                _backend(attention),
                _backend(before),
            )


def _diff(old: dict, new: dict, keys: list[str]) -> str:
    def shown(fields, key):
        return json.dumps(fields[key]) if key in fields else "(absent)"

    return ", ".join(f"{k} {shown(old, k)} → {shown(new, k)}" for k in keys)


# ---------------------------------------------------------------- unfinished saves


def remove_unfinished_saves(directory: str) -> None:
    """Deletes the temporary directories of checkpoint writes that never
    finished under `directory` (call it with the lock held, so that no save
    is running), saying which."""
    if jax.process_index() == 0 and os.path.isdir(directory):
        unfinished = sorted(p for p in os.listdir(directory) if UNFINISHED_SAVE_MARK in p)
        for name in unfinished:
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
        if unfinished:
            logging.warning(
                "Removed %s in %s: checkpoint write(s) of an earlier run that never finished.",
                ", ".join(unfinished),
                directory,
            )
    if jax.process_count() > 1:  # Nobody opens the checkpoints before they are gone.
        multihost_utils.sync_global_devices("removed unfinished checkpoint writes")

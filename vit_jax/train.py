"""The training loop, read top to bottom (big_vision style):

  config check → mesh → the data opened (names, splits and preprocessing
  checked before any model is built) → the Trainer (vit_jax.step: model,
  abstract state, shardings, jitted step) → restore the newest checkpoint or
  start (pre-trained params when asked) → loop { step on donated state →
  metrics → eval → checkpoint } → final checkpoint → .npz export.

The same code runs on one CPU, on 8 simulated CPU devices and on a multi-host
pod: every array is a global jax.Array laid out on one `Mesh`. A seed and a
step decide everything (init, data order, dropout), so a resumed run ends in
the same parameters as one that never stopped. Every config field is listed
and explained in vit_jax.config.default_config() and in docs/training.md.

The workdir belongs to the run (vit_jax.workdir): it is checked for writes
and locked before anything else, and a resume whose config changes what is
computed stops with the list of changes. A checkpoint that fails to save stops
the run at once. SIGTERM (a preemption) and SIGINT (Ctrl-C) finish the step,
save it and stop; a second Ctrl-C stops at once.

A run that diverges stops: every step reports whether its loss and gradient
norm are finite, and the loop reads those flags (no extra host sync) at each
log step and before any checkpoint or export, so no non-finite state is ever
written and the last checkpoint stays a finite one.
"""

import os
import signal
import sys
import time

import jax
import numpy as np
from absl import logging
from clu import metric_writers
from jax.experimental import multihost_utils

from vit_jax import checkpoint, data, optim, sharding
from vit_jax.config import check_class_count, check_config, resolve_total_steps
from vit_jax.data.preprocess import without_op
from vit_jax.errors import (
    EXIT_INTERRUPTED,
    Interrupted,
    NonFiniteError,
    UserError,
)
from vit_jax.evaluate import fewshot
from vit_jax.models import get_model
from vit_jax.objectives import OBJECTIVES
from vit_jax.step import FINITE_KEY, Trainer, build_trainer, global_to_host, make_eval_step
from vit_jax.train_state import Checkpoints, TrainState, describe_params
from vit_jax.workdir import RunRecord, holding_lock, prepare_writable, remove_unfinished_saves


def train_and_evaluate(config, workdir: str) -> TrainState:
    """Trains per `config`, resuming from the newest checkpoint in `workdir`
    that restores; returns the final state (also the one saved on preemption)."""
    check_config(config)
    prepare_writable(workdir)
    with holding_lock(workdir):
        return _train(config, workdir)


def _train(config, workdir: str) -> TrainState:
    mesh = sharding.make_mesh(config.mesh)
    eval_batch_size = config.eval_batch_size or config.batch_size
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(eval_batch_size, mesh, "config.eval_batch_size")
    sharding.check_batch_size(config.batch_size // config.accum_steps, mesh, "micro-batch size")

    # The data, opened once: a missing dataset or a bad preprocessing string
    # fails here, before the model is built.
    info = data.get_dataset_info(config.dataset, config.data_dir)
    check_class_count(config, info.num_classes)
    num_train = data.num_examples(config.dataset, config.train_split, config.data_dir)
    total_steps = resolve_total_steps(config, num_train)
    train_data = data.open_split(
        config.dataset, config.train_split, preprocess=config.pp_train, data_dir=config.data_dir
    )
    test_data = data.open_split(
        config.dataset, config.test_split, preprocess=config.pp_eval, data_dir=config.data_dir
    )

    # Native channels; decode's default (RGB) when the dataset's shape varies.
    channels = info.image_shape[-1] if info.image_shape else 3
    image_shape = (config.image_size, config.image_size, channels)
    trainer = build_trainer(config, info.num_classes, image_shape, mesh, total_steps=total_steps)
    description = describe_params(config.model_name, dict(config.model), trainer.abstract_params)
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    remove_unfinished_saves(checkpoint_dir)
    resuming = Checkpoints.latest_step_in(checkpoint_dir) > 0
    RunRecord(workdir).start_or_check(config, trainer.attention, resuming)
    checkpoints = Checkpoints(checkpoint_dir, keep=config.keep_checkpoints)
    state = _restore_or_start(config, trainer, checkpoints, description)
    first_step = int(state.step)

    writer = _metric_writer(workdir)
    if first_step == 0:  # For TensorBoard; run.json holds them too.
        writer.write_hparams({k: str(v) for k, v in config.items()})
    logging.info(
        "%s: %s parameters, mesh %s, %d steps of %d images.",
        config.model_name,
        f"{sum(int(np.prod(p.shape)) for p in jax.tree.leaves(trainer.abstract_params)):,}",
        dict(mesh.shape),
        total_steps,
        config.batch_size,
    )

    batch_sharding = sharding.batch_sharding(mesh)
    train_batches = data.prefetch_to_device(
        train_data.batches(
            batch_size=config.batch_size,
            seed=config.seed,
            train=True,
            start_step=first_step,  # The data position is the step.
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        ),
        config.prefetch,
        batch_sharding,
    )
    eval_step = jax.jit(
        make_eval_step(trainer.model, config), out_shardings=sharding.replicated(mesh)
    )
    fewshot_probe = make_fewshot_probe(config, eval_batch_size)

    def run_fewshot(step):
        results = fewshot_probe(state.params)
        writer.write_scalars(step, results)
        return results

    def run_eval(step):
        named = {"": state.params}
        if state.ema_params is not None:
            named["ema_"] = state.ema_params
        results = evaluate(eval_step, named, test_data, config, mesh, eval_batch_size)
        writer.write_scalars(step, results)
        logging.info(
            "step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in sorted(results.items()))
        )
        return results

    finiteness = FinitenessWatch(config.skip_nonfinite, checkpoints.directory)
    preemption = PreemptionWatch()
    timer_step, timer_start = first_step, time.perf_counter()
    step = first_step
    try:
        for step in range(first_step + 1, total_steps + 1):
            batch = next(train_batches)
            if step == first_step + 1 and batch["image"].shape[1:] != image_shape:
                raise UserError(
                    f"pp_train produces images of shape {batch['image'].shape[1:]} but "
                    f"config.image_size={config.image_size} (×{image_shape[-1]} channels): "
                    "make them agree."
                )
            state, metrics = trainer.train_step(state, batch)
            finiteness.add(step, metrics.pop(FINITE_KEY))
            checkpoints.check_saves()
            if step == first_step + 1:  # Time steps, not compilation.
                jax.block_until_ready(state)
                timer_step, timer_start = step, time.perf_counter()

            if step % config.log_every == 0 or step == total_steps:
                skipped = finiteness.check(checkpoints.saved_steps())
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                elapsed = time.perf_counter() - timer_start
                steps_per_sec = (step - timer_step) / elapsed if step > timer_step else 0.0
                metrics["train/steps_per_sec"] = steps_per_sec
                metrics["train/images_per_sec"] = steps_per_sec * config.batch_size
                if config.skip_nonfinite:
                    metrics["train/skipped_steps"] = float(skipped)
                writer.write_scalars(step, metrics)
                logging.info(_progress_line(step, total_steps, metrics))
                timer_step, timer_start = step, time.perf_counter()
            if config.eval_every and step % config.eval_every == 0 and step != total_steps:
                run_eval(step)
            if fewshot_probe and config.fewshot_every and step % config.fewshot_every == 0:
                run_fewshot(step)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                finiteness.check(checkpoints.saved_steps())
                checkpoints.save(state, description)
            # At the last step a signal lets the run finish; close() passes it on.
            if step < total_steps and preemption.requested(step):
                finiteness.check(checkpoints.saved_steps())
                checkpoints.save(state, description)
                checkpoints.wait()
                how = f"saved a checkpoint at step {step}; run the same command to resume."
                if preemption.signal_name == "SIGINT":
                    raise Interrupted(f"Ctrl-C: {how}")
                logging.warning("%s: %s", preemption.signal_name or "Preemption", how)
                return state
        finiteness.check(checkpoints.saved_steps())
        checkpoints.save(state, description)
        results = run_eval(step)
        if fewshot_probe and not (config.fewshot_every and step % config.fewshot_every == 0):
            run_fewshot(step)
        what = OBJECTIVES[config.objective].accuracy_name
        print(  # The line a user of `make run` looks for.
            f"Final {what} accuracy after {step} steps: {100 * results['test/accuracy']:.2f}%"
            + (
                f" (EMA params: {100 * results['test/ema_accuracy']:.2f}%)"
                if "test/ema_accuracy" in results
                else ""
            ),
            flush=True,
        )
        if config.export_npz:
            _export_npz(workdir, state)
        checkpoints.wait()
        return state
    finally:
        writer.flush()
        writer.close()
        checkpoints.close()
        preemption.close()


def _metric_writer(workdir: str):
    """TensorBoard's event files from process 0 (asynchronous). The console
    gets the loop's own lines only, not a second copy of every scalar."""
    if jax.process_index() > 0:
        return metric_writers.MultiWriter([])
    return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))


def _restore_or_start(config, trainer: Trainer, checkpoints: Checkpoints, description):
    """The newest checkpoint that restores (only abstract shapes are needed to
    restore into), else a fresh state, with config.pretrained's params when set."""
    state = checkpoints.restore_newest(trainer.abstract_sharded_state(), description)
    if state is not None:
        logging.info("Resumed from %s at step %d.", checkpoints.directory, int(state.step))
        return state
    state = trainer.init_state(config.seed)
    if config.pretrained:
        state = _load_pretrained(config, state)
    return state


def _load_pretrained(config, state: TrainState) -> TrainState:
    """Replaces the fresh params (and EMA) by the pre-trained ones of
    config.pretrained, fitted to this model by vit_jax.checkpoint (new head,
    resized position embeddings); they keep the fresh params' shardings."""
    # A missing file, or another model's, is a CheckpointError (a UserError).
    params = checkpoint.load_pretrained(config.pretrained, state.params, dict(config.model))
    logging.info("Loaded pre-trained params from %s.", config.pretrained)
    return state.replace(params=params, ema_params=params if config.ema_decay else None)


def _progress_line(step: int, total: int, metrics: dict) -> str:
    steps_per_sec = metrics["train/steps_per_sec"]
    eta = (total - step) / steps_per_sec if steps_per_sec else float("nan")
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if steps_per_sec else "?"
    return (
        f"step {step}/{total} ({100 * step / total:.0f}%) loss {metrics['train/loss']:.4f} "
        f"lr {metrics['train/lr']:.2e} grad_norm {metrics['train/grad_norm']:.3f} | "
        f"{steps_per_sec:.1f} steps/s {metrics['train/images_per_sec']:.0f} img/s | "
        f"ETA {eta_text}"
    )


# ---------------------------------------------------------------- the loop's guards


class FinitenessWatch:
    """Collects each step's finite flag (a device scalar, so no host sync per
    step) and reads them when asked: at log steps and before anything is
    written. A non-finite step stops the run with a NonFiniteError, unless
    `skip` (config.skip_nonfinite), where the step already left the state
    unchanged and is only counted."""

    def __init__(self, skip: bool, checkpoint_dir: str):
        self._skip = skip
        self._checkpoint_dir = checkpoint_dir
        self._pending: list[tuple[int, jax.Array]] = []
        self.skipped_total = 0

    def add(self, step: int, finite: jax.Array) -> None:
        self._pending.append((step, finite))

    def check(self, saved_steps) -> int:
        """The number of non-finite steps since the last check (skip mode);
        raises on the first one otherwise. `saved_steps` are the checkpoints
        kept so far, for the message."""
        if not self._pending:
            return 0
        steps = [step for step, _ in self._pending]
        flags = np.asarray(jax.device_get([flag for _, flag in self._pending]))
        self._pending.clear()
        bad = [step for step, ok in zip(steps, flags, strict=True) if not ok]
        if not bad:
            return 0
        if not self._skip:
            raise NonFiniteError(self._message(bad[0], saved_steps))
        self.skipped_total += len(bad)
        logging.warning(
            "Skipped %d step(s) with a non-finite loss or gradient norm (steps %s; %d in this "
            "run): config.skip_nonfinite is set.",
            len(bad),
            _step_ranges(bad),
            self.skipped_total,
        )
        if len(bad) == len(steps):
            raise NonFiniteError(
                f"every step from {steps[0]} to {steps[-1]} had a non-finite loss or gradient "
                f"norm and was skipped: the run is stuck. {_REMEDIES}"
            )
        return len(bad)

    def _message(self, step: int, saved_steps) -> str:
        kept = (
            f"The last checkpoint, step {max(saved_steps)} in {self._checkpoint_dir}, is finite "
            "and nothing after it was written; rerun with a change above to resume from it."
            if saved_steps
            else "No checkpoint was written."
        )
        return (
            f"the loss or gradient norm is not finite at step {step}: training diverged. "
            f"{_REMEDIES} {kept}"
        )


_REMEDIES = (
    "Lower config.lr, warm up longer (config.warmup_steps), clip gradients "
    "(config.grad_clip_norm=1.0), or set config.skip_nonfinite=True to skip such steps."
)


def _step_ranges(steps: list[int]) -> str:
    """'3-5, 9' for [3, 4, 5, 9]."""
    ranges = []
    for step in steps:
        if ranges and ranges[-1][1] == step - 1:
            ranges[-1][1] = step
        else:
            ranges.append([step, step])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


class PreemptionWatch:
    """True once SIGTERM (a preemption) or SIGINT (Ctrl-C) arrived, in every
    process of a multi-host job; the loop then saves after the current step.
    A second Ctrl-C exits at once, without saving."""

    def __init__(self):
        self.signal_name: str | None = None  # 'SIGTERM' | 'SIGINT' once one arrived.
        self._multihost = jax.process_count() > 1
        self._previous = {}
        self._answered = False  # Whether `requested` has told the loop of the signal.
        if not self._multihost:  # Multi-host: jax's own preemption notifier listens.
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame):
        del frame
        if signum == signal.SIGINT and self.signal_name is not None:
            print(
                "Interrupted again: stopped without saving this step.", file=sys.stderr, flush=True
            )
            os._exit(EXIT_INTERRUPTED)  # At once: no waiting for the step or a save.
        self.signal_name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            print(
                "Ctrl-C: saving after this step (Ctrl-C again stops without saving).",
                file=sys.stderr,
                flush=True,
            )

    def requested(self, step: int) -> bool:
        if self._multihost:
            return multihost_utils.reached_preemption_sync_point(step)
        self._answered = self.signal_name is not None
        return self._answered

    def close(self):
        """Restores the previous handlers. A signal the loop never saw (it came
        at the last step or during the final evaluation and export, which
        finish first) is delivered again to them, so that whoever sent it (a
        scheduler, or a script training run after run in one process) is
        still obeyed: the run is complete, its caller stops."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if self.signal_name is not None and not self._answered:
            logging.warning(
                "%s after the last step: the run is complete; stopping as asked.",
                self.signal_name,
            )
            signal.raise_signal(signal.Signals[self.signal_name])


# ---------------------------------------------------------------- evaluation and export


def evaluate(eval_step, params_by_name, test_data, config, mesh, eval_batch_size):
    """Accuracy and loss of each named params tree, all on one pass of
    `test_data` (a data.open_split)."""
    batches = test_data.batches(
        batch_size=eval_batch_size,
        train=False,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    totals = {name: np.zeros(3) for name in params_by_name}
    for batch in data.prefetch_to_device(batches, config.prefetch, sharding.batch_sharding(mesh)):
        for name, params in params_by_name.items():
            totals[name] += np.asarray(jax.device_get(eval_step(params, batch)))
    results = {}
    for name, (correct, count, loss) in totals.items():
        results[f"test/{name}accuracy"] = correct / max(count, 1)
        results[f"test/{name}loss"] = loss / max(count, 1)
    return results


def make_fewshot_probe(config, eval_batch_size: int):
    """params → few-shot metrics on config.fewshot_datasets (None when there
    are none): the paper's fast linear evaluation of the representation."""
    if not config.fewshot_datasets:
        return None
    # The probe's datasets have their own classes: drop the training set's onehot.
    preprocess = config.fewshot_preprocess or without_op(config.pp_eval, "onehot")
    datasets = {
        name: fewshot.data_from_registry(
            name,
            train_split,
            test_split,
            preprocess=preprocess,
            batch_size=eval_batch_size,
            data_dir=config.data_dir,
        )
        for name, train_split, test_split in config.fewshot_datasets
    }
    # The same encoder without a head: its pre-logits are the representation.
    features = fewshot.representation_fn(get_model(config.model_name, None, **config.model))
    return lambda params: fewshot.evaluate(features, params, datasets, shots=config.fewshot_shots)


def _export_npz(workdir: str, state: TrainState) -> None:
    """params.npz (and params_ema.npz) in the official format, from process 0."""
    exports = {"params.npz": state.params}
    if state.ema_params is not None:
        exports["params_ema.npz"] = state.ema_params
    for filename, params in exports.items():
        host_params = global_to_host(params)  # Collective: every process takes part.
        bad = [
            optim.path_name(path)
            for path, leaf in jax.tree_util.tree_flatten_with_path(host_params)[0]
            if not np.all(np.isfinite(leaf))
        ]
        if bad:  # The loop's checks make this unreachable; an export must never carry NaNs.
            raise NonFiniteError(
                f"{filename} not written: {', '.join(bad[:5])} hold non-finite values. {_REMEDIES}"
            )
        if jax.process_index() == 0:
            checkpoint.save_npz(os.path.join(workdir, filename), host_params)
            logging.info("Exported %s.", os.path.join(workdir, filename))

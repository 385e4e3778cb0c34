"""One training loop, read top to bottom (big_vision style):

  mesh → dataset info → model → abstract init (jax.eval_shape) → jitted init
  with out_shardings from the regex rules → optimizer → restore or start →
  loop { jitted step on donated state → metrics → eval → checkpoint } →
  final checkpoint → .npz export of the params.

The same code runs on one CPU, on 8 simulated CPU devices and on a multi-host
pod: every array is a global jax.Array laid out on one `Mesh`. A seed and a
step decide everything (init, data order, dropout), so a resumed run ends in
the same parameters as one that never stopped. Every config field is listed
and explained in `default_config()` and in docs/training.md.

A run that diverges stops: every step reports whether its loss and gradient
norm are finite, and the loop reads those flags (no extra host sync) at each
log step and before any checkpoint or export, so no non-finite state is ever
written and the last checkpoint stays a finite one.
"""

import collections.abc
import dataclasses
import difflib
import math
import os
import signal
import time
import types
import typing
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from vit_jax import optim, sharding
from vit_jax.errors import NonFiniteError, UserError, reraised_as_user_error
from vit_jax.evaluate.accuracy import correct_and_counted
from vit_jax.models import MODELS, attention, get_masked_patch_model, get_model, model_options
from vit_jax.models.mpp import masked_patch_loss
from vit_jax.train_state import Checkpoints, TrainState, describe_params

LOSSES = ("softmax_xent", "sigmoid_xent")
# 'classification' learns the dataset's labels; 'masked_patch_prediction' is the
# self-supervised objective of Sec. 4.6 (labels unused).
OBJECTIVES = ("classification", "masked_patch_prediction")
# The step's metric that says whether its loss and gradient norm are finite;
# the loop collects it instead of writing it (see the module doc).
FINITE_KEY = "train/finite"
# Names users bring from big_vision, the official repo or habit.
_FIELD_ALIASES = {
    "learning_rate": "lr",
    "base_lr": "lr",
    "wd": "weight_decay",
    "num_steps": "total_steps",
    "warmup": "warmup_steps",
    "grad_clip": "grad_clip_norm",
    "polyak_decay": "ema_decay",
    "input_size": "image_size",
}
# Model options users reach for that live elsewhere in the config.
_MODEL_OPTION_ALIASES = {
    "attention": "config.attention (the attention back-end: 'auto' | 'xla' | 'cudnn' | 'cpu')",
    "attention_impl": "config.attention (the attention back-end: 'auto' | 'xla' | 'cudnn' | 'cpu')",
    "num_classes": "the dataset (config.dataset), which sets the head's size",
    "image_size": "config.image_size",
}


def default_config() -> ml_collections.ConfigDict:
    """Every field the trainer reads, with its default. Configs start from this
    and override; docs/training.md explains each field."""
    c = ml_collections.ConfigDict()
    # Model: a registry name and overrides of its options (see get_model).
    c.model_name = "testing"
    c.model = ml_collections.ConfigDict()
    # The attention back-end (vit_jax.models.attention.BACKENDS), chosen for the
    # devices the step is compiled for: 'auto' | 'xla' | 'cudnn' | 'cpu'.
    c.attention = "auto"
    # Data (vit_jax.data): a dataset name, TFDS-style splits, preprocessing strings.
    c.dataset = "digits"
    # A typed None, so that --config.data_dir=DIR parses (config_flags cannot
    # override a plain None).
    c.data_dir = ml_collections.config_dict.placeholder(str)
    c.train_split = "train"
    c.test_split = "test"
    c.pp_train = ""
    c.pp_eval = ""
    c.image_size = 16  # What pp_train/pp_eval produce; the model is initialised at it.
    c.batch_size = 32  # Global, over all devices and hosts.
    c.eval_batch_size = 0  # 0: same as batch_size.
    c.prefetch = 2  # Batches placed on device ahead of the step.
    # Length: total_steps, or total_epochs when total_steps is 0.
    c.total_steps = 100
    c.total_epochs = 0.0
    # Optimiser (vit_jax.optim; weight decay is decoupled and scaled by the full lr).
    c.optimizer = "adam"  # 'adam' (pre-training) | 'sgd' (fine-tuning, with momentum)
    c.lr = 1e-3
    c.b1 = 0.9
    c.b2 = 0.999
    c.adam_eps = 1e-8
    c.momentum = 0.9  # SGD only; 0 disables.
    c.weight_decay = 0.0
    c.wd_mults = ((r".*/kernel$", 1.0),)  # (regex, multiplier): which params decay.
    c.lr_mults = ()  # (regex, multiplier) per-parameter lr; 0 freezes.
    c.warmup_steps = 0
    c.lr_decay = "cosine"  # 'cosine' | 'linear' | 'constant'
    c.end_lr_fraction = 0.0  # lr at the last step, as a fraction of lr.
    c.grad_clip_norm = 1.0  # Global-norm clipping; 0 disables.
    # A step whose loss or gradient norm is not finite stops the run (False), or
    # is skipped (True): its update is not applied and it is counted in
    # train/skipped_steps.
    c.skip_nonfinite = False
    c.accum_steps = 1  # Micro-batches per step (batch_size must be divisible).
    # Objective and loss.
    c.objective = "classification"  # | 'masked_patch_prediction' (Sec. 4.6)
    c.loss = "softmax_xent"  # 'softmax_xent' | 'sigmoid_xent' (classification)
    c.label_smoothing = 0.0
    # Polyak/EMA averaging of the params, evaluated beside them; 0 disables.
    c.ema_decay = 0.0
    c.seed = 0
    # Sharding (vit_jax.sharding): mesh axes and (regex, spec) placement rules.
    c.mesh = (("data", -1), ("fsdp", 1))
    c.sharding_rules = ((".*", "fsdp"),)
    # Cadences (steps) and checkpoints.
    c.log_every = 50
    c.eval_every = 0  # 0: only at the end.
    c.checkpoint_every = 500  # 0: only at the end (and on SIGTERM).
    c.keep_checkpoints = 3
    # Few-shot linear probes of the frozen representation (vit_jax.evaluate.fewshot),
    # every fewshot_every steps and at the end, on (dataset, train split, test split)s.
    c.fewshot_every = 0  # 0: only at the end (when fewshot_datasets is set).
    c.fewshot_datasets = ()  # e.g. (('digits', 'train', 'test'),)
    c.fewshot_shots = (1, 5, 10, 25)
    c.fewshot_preprocess = ""  # '': pp_eval without its label ops.
    # Fine-tuning from an official-format .npz: head re-initialised, position
    # embeddings resized by vit_jax.checkpoint.load_pretrained.
    c.pretrained = ""
    c.export_npz = True  # Write params.npz (and params_ema.npz) in the workdir at the end.
    return c


def check_config(config) -> None:
    """Raises a UserError on fields the trainer does not know (typos) or lacks,
    and on values it cannot use, before anything expensive starts."""
    known = set(default_config().keys())
    given = set(config.keys())
    for name in sorted(given - known):
        close = difflib.get_close_matches(name, known, n=1)
        suggestion = _FIELD_ALIASES.get(name) or (close[0] if close else None)
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        raise UserError(f"config.{name} is not a field the trainer reads.{hint}")
    missing = sorted(known - given)
    if missing:
        raise UserError(
            f"config lacks {', '.join(missing)}: start configs from vit_jax.train.default_config()."
        )
    if config.objective not in OBJECTIVES:
        raise UserError(f"objective={config.objective!r} is unknown; choose one of {OBJECTIVES}.")
    if config.loss not in LOSSES:
        raise UserError(f"loss={config.loss!r} is unknown; choose one of {LOSSES}.")
    if config.optimizer not in optim.OPTIMIZERS:
        raise UserError(
            f"optimizer={config.optimizer!r} is unknown; choose one of {optim.OPTIMIZERS}."
        )
    if config.lr_decay not in optim.LR_DECAYS:
        raise UserError(
            f"lr_decay={config.lr_decay!r} is unknown; choose one of {optim.LR_DECAYS}."
        )
    if config.batch_size < 1:
        raise UserError(
            f"batch_size={config.batch_size}: the global batch must hold at least one image "
            "per data-parallel device."
        )
    if config.eval_batch_size < 0:
        raise UserError(
            f"eval_batch_size={config.eval_batch_size} must be positive, or 0 for batch_size."
        )
    if config.accum_steps < 1 or config.batch_size % config.accum_steps:
        raise UserError(
            f"batch_size={config.batch_size} must be divisible by accum_steps="
            f"{config.accum_steps} (≥ 1)."
        )
    if not 0.0 <= config.ema_decay < 1.0:
        raise UserError(f"ema_decay={config.ema_decay} must be in [0, 1).")
    if config.log_every < 1:
        raise UserError(f"log_every={config.log_every} must be a positive number of steps.")
    check_model_options(config)


def check_model_options(config) -> None:
    """Raises a UserError for an unknown model name, an option (config.model.*)
    the model does not have, or a value of the wrong kind. Command-line values
    of options the config file does not list arrive as Python literals or
    strings (vit_jax.main), so their kind is checked against the module's."""
    try:
        options = model_options(config.model_name)
    except ValueError as error:
        raise UserError(str(error)) from None
    module_cls = MODELS[config.model_name][0]
    fields = {f.name: f for f in dataclasses.fields(module_cls)}
    settable = [o for o in options if o != "num_classes"]
    for name, value in config.model.items():
        if name not in settable:
            close = difflib.get_close_matches(name, settable, n=1)
            where = _MODEL_OPTION_ALIASES.get(name)
            hint = (
                f" It is set by {where}."
                if where
                else f" Did you mean {close[0]!r}?"
                if close
                else ""
            )
            raise UserError(
                f"config.model.{name} is not an option of {config.model_name} "
                f"({module_cls.__name__}).{hint} Its options: {', '.join(settable)}."
            )
        problem = _kind_problem(value, fields[name].type)
        if problem:
            raise UserError(f"config.model.{name}={value!r}: {problem}.")
    try:  # The module's own checks (e.g. masked patch prediction needs a plain ViT).
        make_model(config, num_classes=1)
    except ValueError as error:
        raise UserError(str(error)) from None


def _kind_problem(value, annotation) -> str | None:
    """Why `value` cannot be a module field annotated `annotation`, or None
    (also for annotations too general to check, such as dtype's Any)."""
    if value is None or annotation is typing.Any:
        return None
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    kinds = set()
    for member in members:
        origin = typing.get_origin(member) or member
        if origin is collections.abc.Callable:
            if callable(value):
                return None
            return (
                "this option takes a function, which a command line cannot give; the attention "
                "back-end is chosen by --config.attention=auto|xla|cudnn|cpu"
            )
        if dataclasses.is_dataclass(member):
            if isinstance(value, member):
                return None
            return f"this option takes a {member.__name__}; set it in a config file"
        if origin in (int, float, bool, str, tuple):
            kinds.add(origin)
        elif member is not type(None):
            return None  # Not a plain kind: the module checks it.
    if float in kinds:
        kinds.add(int)  # 0 is a fine dropout rate.
    if tuple in kinds:
        kinds.add(list)
    names = " or ".join(sorted(k.__name__ for k in kinds))
    if isinstance(value, bool) and bool not in kinds:
        kinds.discard(int)  # True is an int to Python, not a size to the model.
    if isinstance(value, tuple(kinds)):
        return None
    return f"this option takes {names}, not {type(value).__name__}"


def resolve_total_steps(config, num_train_examples: int) -> int:
    """config.total_steps, or total_epochs over the training split."""
    if config.total_steps > 0:
        return int(config.total_steps)
    if config.total_epochs <= 0:
        raise UserError("set config.total_steps or config.total_epochs to a positive value.")
    return math.ceil(config.total_epochs * num_train_examples / config.batch_size)


# ---------------------------------------------------------------- the step


def classification_loss(logits, labels, kind: str, label_smoothing: float):
    """Mean over the batch of softmax or sigmoid cross-entropy with (optionally
    smoothed) one-hot or multi-hot float labels."""
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + label_smoothing / labels.shape[-1]
    if kind == "softmax_xent":
        return jnp.mean(optax.softmax_cross_entropy(logits, labels))
    # Sigmoid: summed over classes, as the official JFT code does.
    return jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels), axis=-1))


def objective_loss(model, params, batch, config, rng, *, train: bool):
    """(mean loss, mean accuracy) of the batch under config.objective.

    Masked patch prediction draws its corruption from `rng` and scores the
    mean-colour classes of the corrupted patches; classification the labels.
    """
    dropout_rng, mpp_rng = jax.random.split(rng)
    rngs = {"dropout": dropout_rng, "mpp": mpp_rng}
    if config.objective == "masked_patch_prediction":
        logits, targets, corrupted = model.apply(
            {"params": params}, batch["image"], train=train, rngs=rngs
        )
        hits = (jnp.argmax(logits, axis=-1) == targets) & corrupted
        return masked_patch_loss(logits, targets, corrupted), jnp.sum(hits) / jnp.sum(corrupted)
    logits = model.apply({"params": params}, batch["image"], train=train, rngs=rngs)
    loss = classification_loss(logits, batch["labels"], config.loss, config.label_smoothing)
    correct, counted = correct_and_counted(logits, batch["labels"])
    return loss, jnp.sum(correct) / jnp.maximum(jnp.sum(counted), 1.0)


def make_train_step(model, tx, schedule, config, mesh):
    """state, batch → state, metrics. One optimizer update on the global batch,
    averaged over `config.accum_steps` micro-batches."""
    micro_batch_sharding = sharding.batch_sharding(mesh)

    def loss_and_grad(params, batch, rng):
        def loss_fn(params):
            with sharding.batch_sharded_head_inputs(mesh):
                return objective_loss(model, params, batch, config, rng, train=True)

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    def train_step(state: TrainState, batch):
        step_rng = jax.random.fold_in(state.rng, state.step)  # Exact on resume.
        (loss, accuracy), grads = optim.accumulate_gradients(
            lambda p, b, i: loss_and_grad(p, b, jax.random.fold_in(step_rng, i)),
            state.params,
            batch,
            config.accum_steps,
            constrain=lambda b: jax.lax.with_sharding_constraint(b, micro_batch_sharding),
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = state.ema_params
        if ema_params is not None:
            # Debiased by the update count: the average never keeps the initial params.
            ema_params = optim.ema_update(ema_params, params, config.ema_decay, state.step + 1)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if config.skip_nonfinite:  # The step (and so the data position) moves on regardless.
            params, opt_state, ema_params = jax.tree.map(
                lambda new, old: jnp.where(finite, new, old),
                (params, opt_state, ema_params),
                (state.params, state.opt_state, state.ema_params),
            )
        metrics = {
            "train/loss": loss,
            "train/accuracy": accuracy,
            "train/grad_norm": grad_norm,
            "train/lr": schedule(state.step),
            FINITE_KEY: finite,
        }
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params
        )
        return new_state, metrics

    return train_step


def jit_train_step(model, tx, schedule, config, mesh, state_shardings):
    """The trainer's compiled step: the state is donated and laid out by the
    sharding rules (vit_jax.bench times exactly this)."""
    return jax.jit(
        make_train_step(model, tx, schedule, config, mesh),
        in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )


def make_eval_step(model, config):
    """params, batch → (correct, count, loss sum) over the unpadded examples.

    Classification counts an example as correct when its top class is one of
    its labels, and skips examples without any label (ImageNet ReaL).
    Masked patch prediction scores every real example's corrupted patches,
    with a corruption fixed by the seed so that evaluations compare.
    """

    def eval_step(params, batch):
        mask = batch["mask"].astype(jnp.float32)
        if config.objective == "masked_patch_prediction":
            eval_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2**31 - 1)
            logits, targets, corrupted = model.apply(
                {"params": params}, batch["image"], train=False, rngs={"mpp": eval_rng}
            )
            weights = corrupted * mask[:, None]
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
            hits = jnp.argmax(logits, axis=-1) == targets
            return jnp.sum(hits * weights), jnp.sum(weights), jnp.sum(losses * weights)
        logits = model.apply({"params": params}, batch["image"], train=False)
        correct, counted = correct_and_counted(logits, batch["labels"], mask)
        per_example = jax.vmap(
            lambda lg, lb: classification_loss(lg[None], lb[None], config.loss, 0.0)
        )(logits, batch["labels"])
        return jnp.sum(correct), jnp.sum(counted), jnp.sum(per_example * counted)

    return eval_step


# ---------------------------------------------------------------- state


def init_params(model, rng, image_shape):
    """The model's freshly initialised parameters for images of `image_shape`."""
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    return model.init({"params": rng, "mpp": rng}, dummy, train=False)["params"]


def make_state_factory(model, tx, config, image_shape):
    """rng → a fresh TrainState (pure, so it can be eval_shape'd and jitted)."""

    def create(rng):
        init_rng, root_rng = jax.random.split(rng)
        params = init_params(model, init_rng, image_shape)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            ema_params=params if config.ema_decay else None,
            rng=root_rng,
        )

    return create


def global_to_host(tree):
    """Numpy copies of (possibly multi-host sharded) arrays, on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


# ---------------------------------------------------------------- preemption


class PreemptionWatch:
    """True once SIGTERM arrived (in every process of a multi-host job)."""

    def __init__(self):
        self._requested = False
        self._multihost = jax.process_count() > 1
        self._previous = None
        if not self._multihost:  # Multi-host: jax's own preemption notifier listens.
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        del signum, frame
        self._requested = True

    def requested(self, step: int) -> bool:
        if self._multihost:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested

    def close(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


# ---------------------------------------------------------------- the loop


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


def evaluate(eval_step, params_by_name, config, mesh, eval_batch_size):
    """Accuracy and loss of each named params tree on one pass of the test split."""
    from vit_jax import data

    results = {}
    for name, params in params_by_name.items():
        batches = data.get_iterator(
            config.dataset,
            config.test_split,
            batch_size=eval_batch_size,
            preprocess=config.pp_eval,
            train=False,
            data_dir=config.data_dir,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        totals = np.zeros(3)
        for batch in data.prefetch_to_device(
            batches, config.prefetch, sharding.batch_sharding(mesh)
        ):
            totals += np.asarray(jax.device_get(eval_step(params, batch)))
        correct, count, loss = totals
        results[f"test/{name}accuracy"] = correct / max(count, 1)
        results[f"test/{name}loss"] = loss / max(count, 1)
    return results


def make_fewshot_probe(config, eval_batch_size: int):
    """params → few-shot metrics on config.fewshot_datasets (None when there
    are none): the paper's fast linear evaluation of the representation."""
    if not config.fewshot_datasets:
        return None
    from vit_jax.data.preprocess import without_op
    from vit_jax.evaluate import fewshot

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


def make_model(config, num_classes: int, attention_fn=None):
    """The model `config` trains: the classifier, or its masked-patch variant;
    `attention_fn` (vit_jax.models.attention) replaces the default XLA one."""
    options = dict(config.model)
    if attention_fn is not None and "attention_fn" in model_options(config.model_name):
        options["attention_fn"] = attention_fn
    if config.objective == "masked_patch_prediction":
        return get_masked_patch_model(config.model_name, **options)
    return get_model(config.model_name, num_classes, **options)


def resolve_attention(config, mesh):
    """config.attention for the mesh's devices, logged once."""
    fn, why = attention.resolve(config.attention, mesh, config.model.get("dtype", jnp.float32))
    logging.info("Attention: %s.", why)
    return fn


@dataclasses.dataclass(frozen=True)
class Trainer:
    """A model and a config turned into what the loop runs: the state
    factory, the state's abstract shapes and shardings, the jitted step.
    train_and_evaluate, vit_jax.bench and the GPU checks all build it here, so
    the benchmark times exactly the step that trains."""

    model: Any
    abstract_params: Any
    abstract_state: TrainState
    state_shardings: Any
    create_state: Callable  # rng → TrainState; pure, for eval_shape and jit.
    train_step: Callable  # (state, batch) → (state, metrics); the state is donated.

    def init_state(self, seed: int) -> TrainState:
        """A fresh state, each array created where its sharding puts it."""
        init = jax.jit(self.create_state, out_shardings=self.state_shardings)
        return init(jax.random.PRNGKey(seed))


def build_trainer(config, num_classes: int, image_shape, mesh, model=None) -> Trainer:
    """The Trainer for `config` on images of `image_shape` (H, W, C); `model`
    replaces config's (the benchmark's official-formulation baseline)."""
    if model is None:
        model = make_model(config, num_classes, resolve_attention(config, mesh))
    # Abstract init: shapes only, so nothing big materialises on one device.
    abstract_params = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0), image_shape))
    tx, schedule = optim.make_optimizer(config, abstract_params)
    create_state = make_state_factory(model, tx, config, image_shape)
    abstract_state = jax.eval_shape(create_state, jax.random.PRNGKey(config.seed))
    state_shardings = sharding.tree_shardings(abstract_state, mesh, config.sharding_rules)
    return Trainer(
        model=model,
        abstract_params=abstract_params,
        abstract_state=abstract_state,
        state_shardings=state_shardings,
        create_state=create_state,
        train_step=jit_train_step(model, tx, schedule, config, mesh, state_shardings),
    )


def train_and_evaluate(config, workdir: str) -> TrainState:
    """Trains per `config`, resuming from the latest checkpoint in `workdir`;
    returns the final state (also the one saved on preemption)."""
    from vit_jax import data  # Imported here: it pulls in TensorFlow.

    check_config(config)
    mesh = sharding.make_mesh(config.mesh)
    eval_batch_size = config.eval_batch_size or config.batch_size
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(eval_batch_size, mesh, "config.eval_batch_size")
    sharding.check_batch_size(config.batch_size // config.accum_steps, mesh, "micro-batch size")

    info = data.get_dataset_info(config.dataset, config.data_dir)
    num_train = data.num_examples(config.dataset, config.train_split, config.data_dir)
    total_steps = resolve_total_steps(config, num_train)
    with config.unlocked():
        config.total_steps = total_steps  # The schedule decays to this step.
    try:
        optim.learning_rate_schedule(
            config.lr, total_steps, config.warmup_steps, config.lr_decay, config.end_lr_fraction
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    latest_step = Checkpoints.latest_step_in(os.path.join(workdir, "checkpoints"))

    def open_train_batches(start_step):
        return data.get_iterator(
            config.dataset,
            config.train_split,
            batch_size=config.batch_size,
            preprocess=config.pp_train,
            seed=config.seed,
            train=True,
            start_step=start_step,  # The data position is the step.
            data_dir=config.data_dir,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )

    # Opening the training data now makes a missing dataset or a bad
    # preprocessing string fail before the model is built.
    local_train_batches = open_train_batches(latest_step)
    # Native channels; decode's default (RGB) when the dataset's shape varies.
    channels = info.image_shape[-1] if info.image_shape else 3
    image_shape = (config.image_size, config.image_size, channels)
    trainer = build_trainer(config, info.num_classes, image_shape, mesh)
    model, abstract_params = trainer.model, trainer.abstract_params
    description = describe_params(config.model_name, dict(config.model), abstract_params)

    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    state = None
    if latest_step:
        targets = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            trainer.abstract_state,
            trainer.state_shardings,
        )
        state = checkpoints.restore_newest(targets, description)
    if state is not None:
        first_step = int(state.step)
        logging.info("Resumed from %s at step %d.", checkpoints.directory, first_step)
    else:
        first_step = 0
        state = trainer.init_state(config.seed)
        if config.pretrained:
            state = _load_pretrained(config, state)
    if first_step != latest_step:  # A newer checkpoint did not restore.
        local_train_batches = open_train_batches(first_step)

    # Imported here: clu brings in TensorFlow, which the step functions above
    # (and vit_jax.bench, on accelerator images without TF) do not need.
    from clu import metric_writers

    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=True
    )
    if first_step == 0:
        writer.write_hparams({k: str(v) for k, v in config.items()})
    logging.info(
        "%s: %s parameters, mesh %s, %d steps of %d images.",
        config.model_name,
        f"{sum(int(np.prod(p.shape)) for p in jax.tree.leaves(abstract_params)):,}",
        dict(mesh.shape),
        total_steps,
        config.batch_size,
    )

    batch_sharding = sharding.batch_sharding(mesh)
    train_step = trainer.train_step
    eval_step = jax.jit(make_eval_step(model, config), out_shardings=sharding.replicated(mesh))
    fewshot_probe = make_fewshot_probe(config, eval_batch_size)
    train_batches = data.prefetch_to_device(local_train_batches, config.prefetch, batch_sharding)

    def run_fewshot(step):
        results = fewshot_probe(state.params)
        writer.write_scalars(step, results)
        return results

    def run_eval(step):
        named = {"": state.params}
        if state.ema_params is not None:
            named["ema_"] = state.ema_params
        results = evaluate(eval_step, named, config, mesh, eval_batch_size)
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
            state, metrics = train_step(state, batch)
            finiteness.add(step, metrics.pop(FINITE_KEY))
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
            if preemption.requested(step):
                finiteness.check(checkpoints.saved_steps())
                checkpoints.save(state, description)
                checkpoints.wait()
                logging.warning(
                    "SIGTERM: saved a checkpoint at step %d; run the same command to resume.", step
                )
                return state
        finiteness.check(checkpoints.saved_steps())
        checkpoints.save(state, description)
        results = run_eval(step)
        if fewshot_probe and not (config.fewshot_every and step % config.fewshot_every == 0):
            run_fewshot(step)
        what = "test" if config.objective == "classification" else "masked-patch colour test"
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
        preemption.close()
        writer.flush()
        writer.close()
        checkpoints.close()


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


def _load_pretrained(config, state: TrainState) -> TrainState:
    """Replaces the fresh params (and EMA) by the pre-trained ones of
    config.pretrained, fitted to this model by vit_jax.checkpoint (new head,
    resized position embeddings); they keep the fresh params' shardings."""
    from vit_jax import checkpoint

    with reraised_as_user_error(checkpoint.CheckpointError):  # Missing, or another model's.
        params = checkpoint.load_pretrained(config.pretrained, state.params, dict(config.model))
    logging.info("Loaded pre-trained params from %s.", config.pretrained)
    return state.replace(params=params, ema_params=params if config.ema_decay else None)


def _export_npz(workdir: str, state: TrainState) -> None:
    """params.npz (and params_ema.npz) in the official format, from process 0."""
    from vit_jax import checkpoint

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

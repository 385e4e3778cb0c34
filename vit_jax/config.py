"""The config schema: every field the trainer reads, with its default, and
the checks that turn a mistyped or impossible config into one message before
anything expensive starts. docs/training.md explains each field."""

import collections.abc
import dataclasses
import difflib
import math
import types
import typing

import ml_collections

from vit_jax import objectives, optim
from vit_jax.errors import UserError
from vit_jax.models import MODELS, model_options

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
    # The attention back-end (vit_jax.kernels.backends), chosen from this and the
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
    c.adam_mu_dtype = "float32"  # | 'bfloat16': Adam's first moment (ν and weights stay float32).
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
    # A resume whose config changes what is computed (any field outside
    # REPORTING_FIELDS) stops with the list of changes ('refuse'), or goes on
    # and logs them ('allow'). See vit_jax.workdir.
    c.resume_changes = "refuse"
    return c


# Fields that change only what is reported, how often, or where files are: a
# resume may change them (vit_jax.workdir logs it). Every other field changes
# what the run computes.
REPORTING_FIELDS = frozenset(
    {
        "data_dir",
        "prefetch",
        "eval_batch_size",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "fewshot_every",
        "fewshot_datasets",
        "fewshot_shots",
        "fewshot_preprocess",
        "export_npz",
        "resume_changes",
    }
)
RESUME_CHANGES = ("refuse", "allow")


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
            f"config lacks {', '.join(missing)}: start configs from "
            "vit_jax.config.default_config()."
        )
    if config.objective not in objectives.OBJECTIVES:
        known = tuple(objectives.OBJECTIVES)
        raise UserError(f"objective={config.objective!r} is unknown; choose one of {known}.")
    if config.loss not in objectives.LOSSES:
        raise UserError(f"loss={config.loss!r} is unknown; choose one of {objectives.LOSSES}.")
    if config.optimizer not in optim.OPTIMIZERS:
        raise UserError(
            f"optimizer={config.optimizer!r} is unknown; choose one of {optim.OPTIMIZERS}."
        )
    optim.check_adam_mu_dtype(config.adam_mu_dtype)
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
    if config.resume_changes not in RESUME_CHANGES:
        raise UserError(
            f"resume_changes={config.resume_changes!r} is unknown; choose one of {RESUME_CHANGES}."
        )
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
        objectives.OBJECTIVES[config.objective].build_model(
            config.model_name, 1, dict(config.model)
        )
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


def check_class_count(config, num_classes: int) -> None:
    """An objective that learns the labels needs at least two classes to tell apart."""
    if objectives.OBJECTIVES[config.objective].uses_labels and num_classes < 2:
        raise UserError(
            f"dataset {config.dataset!r} has {num_classes} class(es): a classifier needs at "
            "least 2 (for folder:PATH, one sub-folder of images per class)."
        )


def resolve_total_steps(config, num_train_examples: int) -> int:
    """config.total_steps, or total_epochs over the training split."""
    if config.total_steps > 0:
        return int(config.total_steps)
    if config.total_epochs <= 0:
        raise UserError("set config.total_steps or config.total_epochs to a positive value.")
    return math.ceil(config.total_epochs * num_train_examples / config.batch_size)

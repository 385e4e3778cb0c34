"""Config overrides as `field=value` strings, the same in-process and on the
command line (`--config.field=value`), and the presets that shrink any paper
config to a CPU-sized run on a local dataset."""

import ast

import ml_collections

from vit_jax.errors import UserError

# A run of any paper config in seconds on a laptop: the 'testing' ViT (4x4
# patches, width 16, 2 layers) on scikit-learn's digits at 16 px, 2 steps.
TINY_MODEL_WIDTH = 16
TINY = (
    "model_name=testing",
    "dataset=digits",
    "data_dir=None",
    "train_split=train",
    "test_split=test",
    "image_size=16",
    "batch_size=8",
    "eval_batch_size=64",
    "accum_steps=1",
    "total_steps=2",
    "total_epochs=0.0",
    "warmup_steps=1",
    "log_every=1",
    "eval_every=0",
    "checkpoint_every=0",
    "export_npz=False",
    "pretrained=",
    "fewshot_datasets=()",  # The runs' ImageNet probes: no ImageNet on a CPU run.
)


# The model, data, batch and cadence of a CPU run, with the rest of the config
# as it is: optimiser, learning rate, schedule (see shrink_overrides), clipping,
# weight decay, EMA, loss, label smoothing and the model's head, classifier,
# position-embedding and dropout options. 8x8 digits make 4 patches of the
# 'testing' ViT.
SHRINK = (
    "model_name=testing",
    "dataset=digits",
    "data_dir=None",
    "train_split=train",
    "test_split=test",
    "image_size=8",
    "pp_train=value_range(-1,1)|onehot(10)",
    "pp_eval=value_range(-1,1)|onehot(10)",
    "batch_size=8",
    "eval_batch_size=0",
    "total_epochs=0.0",
    "log_every=1",
    "eval_every=0",
    "checkpoint_every=0",
    "export_npz=False",
    "pretrained=",
    "fewshot_datasets=()",
    "attention=xla",
)


def parse_value(text: str):
    """A Python literal when `text` is one (2, 0.1, None, True), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_override(item: str) -> tuple[str, str]:
    field, sep, value = item.partition("=")
    if not sep or not field.strip():
        raise UserError(f"override {item!r} is not field=value (e.g. total_steps=100).")
    return field.strip(), value.strip()


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
    """A copy of `config` with each `field=value` (dotted fields reach into
    config.model) set; an unknown field is an error."""
    config = ml_collections.ConfigDict(config)  # A copy that keeps the references.
    for item in overrides:
        field, text = split_override(item)
        *parents, leaf = field.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        if leaf not in node and not parents:
            raise UserError(f"override {item!r}: the config has no field {field!r}.")
        with node.unlocked():
            node[leaf] = parse_value(text)
    return config


def tiny_overrides(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """TINY, plus what this config's model options need at the tiny width
    (its pre-logits layer, when it has one, becomes as wide as the model)."""
    extra = ()
    if config.model.get("representation_size"):
        extra = (f"model.representation_size={TINY_MODEL_WIDTH}",)
    return TINY + extra


def shrink_overrides(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """SHRINK, the run's total steps as the full run resolves them (its epochs
    of its own training split), so that the schedule and its warm-up are the
    full run's, and the tiny width for a pre-logits layer."""
    # Only now: data pulls in TensorFlow, the schema jax and the models.
    from vit_jax import data
    from vit_jax.config import resolve_total_steps

    examples = (
        0
        if config.total_steps
        else data.num_examples(config.dataset, config.train_split, config.data_dir)
    )
    steps = resolve_total_steps(config, examples)
    extra = (f"model.representation_size={TINY_MODEL_WIDTH}",)
    return (
        SHRINK
        + (f"total_steps={steps}",)
        + (extra if config.model.get("representation_size") else ())
    )


def as_flags(overrides) -> list[str]:
    """The command-line form of the overrides."""
    flags = []
    for item in overrides:
        field, value = split_override(item)
        flags.append(f"--config.{field}={value}")
    return flags

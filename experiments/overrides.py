"""Config overrides as `field=value` strings, the same in-process and on the
command line (`--config.field=value`), and the preset that shrinks any paper
config to a CPU-sized run on a local dataset."""

import ast

import ml_collections

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
        raise ValueError(f"override {item!r} is not field=value (e.g. total_steps=100).")
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
            raise ValueError(f"override {item!r}: the config has no field {field!r}.")
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


def as_flags(overrides) -> list[str]:
    """The command-line form of the overrides."""
    flags = []
    for item in overrides:
        field, value = split_override(item)
        flags.append(f"--config.{field}={value}")
    return flags

"""What the paper configs share: the variant argument, resolution-following
preprocessing, and the pre-training and fine-tuning recipes (Sec. 4.1, App. B.1).
Each config file starts from vit_jax.config.default_config() (the documented
schema) and sets only what differs from it.

    get_config("model=ViT-B_16,dataset=cifar10,lr=0.003")

The argument is `key=value` pairs separated by commas; each config declares its
keys with defaults, and a value is converted to the default's type.
"""

import difflib
import string

import ml_collections

from vit_jax.data import RECIPES

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _convert(key: str, text: str, default):
    """`text` as the type of `default` (str when the default is None)."""
    try:
        if isinstance(default, bool):
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ValueError(
            f"config argument {key}={text!r} must be a {type(default).__name__} "
            f"(the default is {default!r})."
        ) from None
    return text


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """The variant picked by `arg` ("k=v,k=v"), over `defaults`.

    Unknown keys are an error naming the known ones, so a typo never silently
    falls back to a default.
    """
    choices = dict(defaults)
    for item in filter(None, (part.strip() for part in (arg or "").split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"config argument {item!r} is not key=value with a known key.{hint} "
                f"Known keys (with defaults): " + ", ".join(f"{k}={v}" for k, v in defaults.items())
            )
        choices[key] = _convert(key, value.strip(), defaults[key])
    return ml_collections.ConfigDict(choices)


def check_choice(what: str, value, allowed) -> None:
    """A ValueError naming the allowed values when `value` is not one of them."""
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{what}={value!r} is not one of the paper's: {', '.join(map(str, allowed))}.{hint}"
        )


def recipe_following_image_size(config: ml_collections.ConfigDict, recipe: str):
    """The preprocessing string of `recipe` (vit_jax.data.RECIPES) as a reference
    to config.image_size, so `--config.image_size=64` also changes the crops.

    The eval recipes resize to round(size·256/224) first; that is computed in
    integers ((8·size + 3) // 7) because the reference only does arithmetic.
    """
    size = config.get_ref("image_size")
    values = {"size": size.to_str(), "resize": ((size * 8 + 3) // 7).to_str()}
    pieces = []
    for literal, field, _, _ in string.Formatter().parse(RECIPES[recipe][1]):
        pieces.append(literal)
        if field is not None:
            pieces.append(values[field])
    result = pieces[0]
    for piece in pieces[1:]:
        result = result + piece
    return result


def set_model(config: ml_collections.ConfigDict, name: str, **options) -> None:
    """config.model_name and config.model (the get_model overrides)."""
    config.model_name = name
    config.model = ml_collections.ConfigDict(options)


# Pre-training (Sec. 4.1, App. B.1): Adam with β1 0.9, β2 0.999 (default_config's
# values), batch 4096, 10k linear warm-up steps, 224 px with an Inception crop and
# a flip. Table 3's caption clips gradients at global norm 1 on ImageNet-1k only.
PRETRAIN_BATCH_SIZE = 4096
PRETRAIN_WARMUP_STEPS = 10_000
PRETRAIN_RESOLUTION = 224

# Fine-tuning (Sec. 4.1, App. B.1.1): SGD with momentum 0.9, batch 512, cosine
# decay, no weight decay, clipping at global norm 1 (default_config's optimiser
# values but 'sgd'), 384 px.
FINETUNE_BATCH_SIZE = 512
FINETUNE_RESOLUTION = 384


def set_pretraining(
    config, *, lr, lr_decay, weight_decay, grad_clip_norm, epochs=0.0, steps=0
) -> None:
    """The pre-training recipe with one row's values (Table 3); the run's length
    in epochs of the training split or in steps."""
    config.image_size = PRETRAIN_RESOLUTION
    config.pp_train = recipe_following_image_size(config, "pretrain")
    config.pp_eval = recipe_following_image_size(config, "pretrain_eval")
    config.batch_size = PRETRAIN_BATCH_SIZE
    config.total_steps = steps
    config.total_epochs = float(epochs)
    config.lr = lr
    config.lr_decay = lr_decay
    config.weight_decay = weight_decay
    config.warmup_steps = PRETRAIN_WARMUP_STEPS
    config.grad_clip_norm = grad_clip_norm
    # Runs of days: evaluate and checkpoint every few hours.
    config.log_every = 100
    config.eval_every = 10_000
    config.checkpoint_every = 2_000
    config.keep_checkpoints = 2


def set_finetuning(
    config, *, steps, warmup_steps, lr, resolution, pretrained, train_recipe="finetune"
) -> None:
    """The fine-tuning recipe (Table 4's, VTAB's and masked patch prediction's):
    a new zero head on `pretrained`, `train_recipe`'s augmentation at `resolution`."""
    config.pretrained = pretrained
    config.image_size = resolution
    config.pp_train = recipe_following_image_size(config, train_recipe)
    config.pp_eval = recipe_following_image_size(config, "finetune_eval")
    config.batch_size = FINETUNE_BATCH_SIZE
    config.total_steps = steps
    config.optimizer = "sgd"
    config.lr = lr
    config.warmup_steps = warmup_steps
    config.eval_every = max(steps // 10, 100)
    config.checkpoint_every = 1_000
    config.keep_checkpoints = 1

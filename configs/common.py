"""What every paper config shares: the variant argument and resolution-following
preprocessing. The hyper-parameters themselves live in each config file.

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

"""Preprocessing ops registered by name and composed from a string, as in big_vision.

    fn = build("decode|inception_crop(384)|flip_lr|value_range(-1, 1)|onehot(10)")

A dataset's input pipeline (vit_jax.data.open_split) fills in a `onehot` left
without a depth ("...|onehot" or "...|onehot(smoothing=0.1)") with the
dataset's class count, so that a config works for any dataset.
    example = fn({"image": ..., "label": ..., "_seed": seed})

Each op maps an example dict of tf tensors to a new one. Images enter as uint8 0..255
(encoded bytes before `decode`); `value_range` turns them into float32. Random ops draw
from the example's '_seed' (a stateless [2] int64 key the pipeline derives from the run
seed and the example's position in the stream) and pass a fresh key on, so the same
(seed, step, example) always gets the same crop and flip, whatever process reads it.

Ops:
  decode(channels=3)        encoded image bytes -> uint8 (no-op on decoded images);
                            channels=0 keeps each file's own channel count
  resize(size) / resize(h, w)       bilinear resize to a fixed size
  resize_small(size)        resize so that the shorter side is `size`, keeping aspect
  central_crop(size) / central_crop(h, w)
  pad(pixels, value=0)      pad every side by `pixels` with `value` (before random_crop:
                            the CIFAR-style translation of up to `pixels` px)
  random_crop(size) / random_crop(h, w)
  inception_crop(size=None, area_min=5, area_max=100)
                            random crop of 5-100% of the area with aspect 3/4..4/3,
                            resized to `size` (Szegedy et al.'s "Inception" crop)
  flip_lr                   random horizontal flip
  gray_to_rgb               tile a 1-channel image to 3 channels (no-op on 3 channels)
  value_range(vmin=-1, vmax=1, in_min=0, in_max=255)  linear map to [vmin, vmax], float32
  onehot(depth, smoothing=0.0)  'label' (int, or a list of ints for multi-label) ->
                            'labels' float32 one-/multi-hot; smoothing moves that much
                            mass uniformly over all classes. Errors on a label >= depth.
                            Without depth: the dataset's class count (see above).
"""

import ast
from collections.abc import Callable

import tensorflow as tf

from vit_jax.errors import UserError

Example = dict[str, tf.Tensor]
Op = Callable[[Example], Example]

_OPS: dict[str, Callable[..., Op]] = {}


def register(name: str):
    def decorator(factory):
        _OPS[name] = factory
        return factory

    return decorator


def _size(h: int, w: int | None = None) -> tuple[int, int]:
    return (h, h) if w is None else (h, w)


def _take_seed(example: Example) -> tf.Tensor:
    """A key for this op; the example carries a fresh one on to the next random op."""
    if "_seed" not in example:
        raise ValueError("Random preprocessing ops need the pipeline's per-example '_seed'.")
    op_seed, next_seed = tf.unstack(tf.random.experimental.stateless_split(example["_seed"], 2))
    example["_seed"] = next_seed
    return op_seed


def _with_image(example: Example, image: tf.Tensor) -> Example:
    return {**example, "image": image}


@register("decode")
def decode(channels: int = 3) -> Op:
    def op(example):
        image = example["image"]
        if image.dtype != tf.string:
            return example
        image = tf.io.decode_image(image, channels=channels, expand_animations=False)
        return _with_image(example, image)

    return op


@register("resize")
def resize(h: int, w: int | None = None, method: str = "bilinear") -> Op:
    size = _size(h, w)
    return lambda ex: _with_image(ex, tf.image.resize(ex["image"], size, method=method))


@register("resize_small")
def resize_small(size: int, method: str = "bilinear") -> Op:
    def op(example):
        image = example["image"]
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = size / tf.reduce_min(hw)
        new_hw = tf.cast(tf.round(hw * scale), tf.int32)
        return _with_image(example, tf.image.resize(image, new_hw, method=method))

    return op


@register("central_crop")
def central_crop(h: int, w: int | None = None) -> Op:
    crop_h, crop_w = _size(h, w)

    def op(example):
        image = example["image"]
        top = (tf.shape(image)[0] - crop_h) // 2
        left = (tf.shape(image)[1] - crop_w) // 2
        return _with_image(example, image[top : top + crop_h, left : left + crop_w])

    return op


@register("pad")
def pad(pixels: int, value: int = 0) -> Op:
    def op(example):
        image = example["image"]
        padded = tf.pad(
            image,
            [[pixels, pixels], [pixels, pixels], [0, 0]],
            constant_values=tf.cast(value, image.dtype),
        )
        return _with_image(example, padded)

    return op


@register("random_crop")
def random_crop(h: int, w: int | None = None) -> Op:
    crop_h, crop_w = _size(h, w)

    def op(example):
        image = example["image"]
        shape = tf.stack([crop_h, crop_w, tf.shape(image)[2]])
        crop = tf.image.stateless_random_crop(image, shape, seed=_take_seed(example))
        return _with_image(example, crop)

    return op


@register("inception_crop")
def inception_crop(size: int | None = None, area_min: float = 5, area_max: float = 100) -> Op:
    def op(example):
        image = example["image"]
        begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            bounding_boxes=tf.zeros([1, 0, 4]),
            seed=_take_seed(example),
            min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(area_min / 100, area_max / 100),
            use_image_if_no_bounding_boxes=True,
        )
        crop = tf.slice(image, begin, crop_size)
        if size is not None:
            crop = tf.image.resize(crop, (size, size))
        return _with_image(example, crop)

    return op


@register("flip_lr")
def flip_lr() -> Op:
    def op(example):
        flipped = tf.image.stateless_random_flip_left_right(example["image"], _take_seed(example))
        return _with_image(example, flipped)

    return op


@register("gray_to_rgb")
def gray_to_rgb() -> Op:
    def op(example):
        image = example["image"]
        if image.shape[-1] == 1:
            image = tf.tile(image, [1, 1, 3])
        return _with_image(example, image)

    return op


@register("value_range")
def value_range(vmin: float = -1, vmax: float = 1, in_min: float = 0, in_max: float = 255) -> Op:
    scale = (vmax - vmin) / (in_max - in_min)

    def op(example):
        image = tf.cast(example["image"], tf.float32)
        return _with_image(example, (image - in_min) * scale + vmin)

    return op


@register("onehot")
def onehot(
    depth: int | None = None, smoothing: float = 0.0, key: str = "label", key_result: str = "labels"
) -> Op:
    if depth is None:
        raise UserError(
            "onehot without a depth takes the dataset's class count, which only a dataset's "
            "pipeline (vit_jax.data.open_split) knows: write onehot(num_classes) here."
        )

    def op(example):
        label = tf.cast(example[key], tf.int64)
        checks = [
            tf.debugging.assert_less(
                label,
                tf.constant(depth, tf.int64),
                message=f"Label outside the model's {depth} classes (onehot({depth})): set "
                "num_classes to the dataset's class count.",
            ),
            tf.debugging.assert_non_negative(label, message="Negative label."),
        ]
        with tf.control_dependencies(checks):
            hot = tf.one_hot(label, depth, dtype=tf.float32)
        if label.shape.rank == 1:  # multi-label: union of the classes (none -> all zeros)
            hot = tf.reduce_max(tf.concat([tf.zeros([1, depth]), hot], axis=0), axis=0)
        if smoothing:
            hot = hot * (1.0 - smoothing) + smoothing / depth
        return {**example, key_result: hot}

    return op


def _parse(spec: str) -> tuple[str, list, dict]:
    try:
        node = ast.parse(spec.strip(), mode="eval").body
        if isinstance(node, ast.Name):
            return node.id, [], {}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            return node.func.id, args, kwargs
    except (SyntaxError, ValueError):
        pass
    raise UserError(f"Cannot parse preprocessing op {spec!r}: write name or name(args).")


def build(spec: str) -> Op:
    """Composes the ops of a 'op1|op2(args)|...' string into one function."""
    ops = []
    for part in filter(str.strip, spec.split("|")):
        name, args, kwargs = _parse(part)
        if name not in _OPS:
            raise UserError(
                f"Unknown preprocessing op {name!r} in {spec!r}. Known: {', '.join(_OPS)}."
            )
        try:
            ops.append(_OPS[name](*args, **kwargs))
        except TypeError as error:
            raise UserError(f"Bad arguments for op {part.strip()!r}: {error}") from error

    def composed(example: Example) -> Example:
        for op in ops:
            example = op(example)
        return example

    return composed


def has_op(spec: str, name: str) -> bool:
    return any(_parse(p)[0] == name for p in filter(str.strip, spec.split("|")))


def onehot_depths(spec: str) -> list[int | None]:
    """The depth of each onehot op in `spec` (None where it is left out)."""
    depths = []
    for part in filter(str.strip, spec.split("|")):
        name, args, kwargs = _parse(part)
        if name == "onehot":
            depths.append(args[0] if args else kwargs.get("depth"))
    return depths


def with_onehot_depth(spec: str, depth: int) -> str:
    """`spec` with `depth` given to each onehot op that leaves it out."""
    parts = []
    for part in filter(str.strip, spec.split("|")):
        name, args, kwargs = _parse(part)
        if name == "onehot" and not args and "depth" not in kwargs:
            options = "".join(f", {k}={v!r}" for k, v in kwargs.items())
            part = f"onehot({depth}{options})"
        parts.append(part)
    return "|".join(parts)


def without_op(spec: str, name: str) -> str:
    """`spec` with every `name` op removed (e.g. a dataset-specific onehot)."""
    return "|".join(p for p in filter(str.strip, spec.split("|")) if _parse(p)[0] != name)


# The paper's recipes (official vision_transformer input pipeline and big_vision configs).
RECIPES = {
    # Pre-training (ImageNet, ImageNet-21k, JFT) at 224: Inception crop + flip.
    "pretrain": (224, "decode|inception_crop({size})|flip_lr|value_range(-1, 1)"),
    "pretrain_eval": (224, "decode|resize_small({resize})|central_crop({size})|value_range(-1, 1)"),
    # Fine-tuning at 384: crop of 5-100% of the area + flip; evaluation resizes the whole image.
    "finetune": (384, "decode|inception_crop({size})|flip_lr|value_range(-1, 1)"),
    "finetune_eval": (384, "decode|resize({size})|value_range(-1, 1)"),
    # Fine-tuning where a crop or a flip would change the label (VTAB's structured
    # tasks, see vit_jax.data.vtab.train_recipe): only the other one, or neither.
    "finetune_no_flip": (384, "decode|inception_crop({size})|value_range(-1, 1)"),
    "finetune_no_crop": (384, "decode|resize({size})|flip_lr|value_range(-1, 1)"),
}


def recipe(name: str, size: int | None = None) -> str:
    """The preprocessing string of one of the paper's recipes (see RECIPES) at `size` px."""
    if name not in RECIPES:
        raise UserError(f"Unknown recipe {name!r}; known: {', '.join(RECIPES)}.")
    default_size, template = RECIPES[name]
    size = size or default_size
    return template.format(size=size, resize=round(size * 256 / 224))

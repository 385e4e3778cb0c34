"""Classify images with a saved checkpoint: the top-k classes and their probabilities.

    python -m vit_jax.infer --checkpoint=ViT-B_16_imagenet2012.npz photo.jpg [photo2.png ...]

The checkpoint is an .npz file (official or save_npz) or a Hugging Face
transformers model directory (vit_jax.convert.huggingface). The architecture
and input resolution are read from the checkpoint's parameter shapes (hidden
size, patch size, layers, heads, MLP width, class token or GAP,
position-embedding kind and grid, pre-logits, hybrid ResNet stem), so
`--model` is only needed for BiT ResNets or to double-check; an AugReg file
name (vit_jax.convert.augreg) names its model, and its recipe is printed.
A 1000-class head is named with the ImageNet-1k class names shipped in the
package (vit_jax/imagenet_labels.txt, WordNet 3.0 lemmas of the ILSVRC-2012
synsets in their standard order); other heads with `--labels=FILE`.
"""

import argparse
import dataclasses
import importlib.resources
import math
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from vit_jax.checkpoint import load_npz
from vit_jax.convert import augreg, huggingface
from vit_jax.errors import UserError, cli, reraised_as_user_error
from vit_jax.models import VisionTransformer, get_model
from vit_jax.models.resnet import ResNetSpec

IMAGENET_CLASSES = 1000


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A module that matches a checkpoint, and the image size it was trained at."""

    module: nn.Module
    image_size: tuple[int, int] | None  # None where no table fixes the grid.
    channels: int  # 3 for RGB; 1 for grey-scale models such as the digits demo.

    @property
    def has_class_token(self) -> bool:
        return getattr(self.module, "classifier", None) == "token"

    @property
    def grid(self) -> tuple[int, int]:
        """The (rows, cols) token grid of an `image_size` input."""
        stride = pixels_per_token(self.module)
        return self.image_size[0] // stride[0], self.image_size[1] // stride[1]


def pixels_per_token(module) -> tuple[int, int]:
    """Input pixels per token side: the patch size times a hybrid stem's
    downsampling (4 at the root, then 2 per stage after the first)."""
    stem = 4 * 2 ** (len(module.resnet.num_layers) - 1) if module.resnet else 1
    return module.patch_size[0] * stem, module.patch_size[1] * stem


def imagenet_class_names() -> list[str]:
    """The 1000 ILSVRC-2012 class names, index i being label i of TFDS imagenet2012."""
    text = importlib.resources.files("vit_jax").joinpath("imagenet_labels.txt").read_text()
    names = [line.split("\t", 1)[1] for line in text.splitlines() if line]
    assert len(names) == IMAGENET_CLASSES, f"imagenet_labels.txt has {len(names)} lines"
    return names


def _input_channels(params) -> int:
    first_conv = params["conv_root"] if "conv_root" in params else params["embedding"]
    return first_conv["kernel"].shape[2]


def _count(tree: dict, pattern: str) -> int:
    return sum(1 for key in tree if re.fullmatch(pattern, key))


def _hybrid_spec(params) -> ResNetSpec | None:
    if "conv_root" not in params:
        return None
    width_factor = params["conv_root"]["kernel"].shape[-1] / 64
    stages = _count(params, r"block\d+")
    units = tuple(_count(params[f"block{s}"], r"unit\d+") for s in range(1, stages + 1))
    return ResNetSpec(units, width_factor)


def _posemb_kind_and_grid(params, has_class_token: bool):
    """The position-embedding kind and, where its tables fix one, the token grid."""
    transformer = params["Transformer"]
    tables = transformer.get("posembed_input", {})
    if "pos_embedding" in tables:
        patches = tables["pos_embedding"].shape[1] - has_class_token
        side = math.isqrt(patches)
        # Non-square 1-D tables cannot be told apart from their transpose.
        return "learn_1d", (side, side) if side * side == patches else None
    if "pos_embedding_row" in tables:
        rows = tables["pos_embedding_row"].shape[0]
        return "learn_2d", (rows, tables["pos_embedding_col"].shape[0])
    relative = transformer.get("relpos_0", {})
    if "rel_keys" in relative:  # App. D.4's relative attention: 2T - 1 offsets.
        patches = (relative["rel_keys"].shape[0] + 1) // 2 - has_class_token
        side = math.isqrt(patches)
        return "relative", (side, side) if side * side == patches else None
    if "rel_embedding" in relative:
        offsets = relative["rel_embedding"].shape[0] - 3
        side = (math.isqrt(offsets) + 1) // 2  # (2r-1)² offsets on a square grid.
        return "relative_bias", (side, side)
    return "none", None


def vit_config_from_params(params) -> dict:
    """get_model-style keyword arguments of the ViT whose parameters these are."""
    if "embedding" not in params or "Transformer" not in params:
        raise UserError(
            "these parameters are not a ViT's (no embedding/Transformer); "
            "pass --model=NAME, e.g. --model=BiT-R50x1."
        )
    patch_h, patch_w, _, hidden = params["embedding"]["kernel"].shape
    transformer = params["Transformer"]
    block = transformer["encoderblock_0"]
    attention = next(v for k, v in block.items() if k.startswith("MultiHeadDotProductAttention"))
    mlp = next(v for k, v in block.items() if k.startswith("MlpBlock"))
    classifier = "token" if "cls" in params else "gap"
    posemb, grid = _posemb_kind_and_grid(params, classifier == "token")
    config = dict(
        num_classes=params["head"]["kernel"].shape[-1] if "head" in params else None,
        patch_size=(patch_h, patch_w),
        hidden_size=hidden,
        num_layers=_count(transformer, r"encoderblock_\d+"),
        num_heads=attention["query"]["kernel"].shape[1],
        mlp_dim=mlp["Dense_0"]["kernel"].shape[-1],
        classifier=classifier,
        posemb=posemb,
        representation_size=(
            params["pre_logits"]["kernel"].shape[-1] if "pre_logits" in params else None
        ),
        resnet=_hybrid_spec(params),
    )
    return dict(config, grid=grid)


def model_from_params(params, model_name: str | None = None, gelu: str = "tanh") -> LoadedModel:
    """The module (and trained image size) for `params`, read from their shapes.

    With `model_name` the registered model is used, with the checkpoint's head
    size, classifier, position embedding and pre-logits. `gelu` is the form
    the params were trained with (shapes cannot tell).
    """
    if model_name is not None and "Transformer" not in params:
        num_classes = params["head"]["kernel"].shape[-1] if "head" in params else None
        return LoadedModel(get_model(model_name, num_classes), None, _input_channels(params))
    config = vit_config_from_params(params)
    grid = config.pop("grid")
    if model_name is None:
        module = VisionTransformer(**config, gelu=gelu)
    else:
        overrides = {k: config[k] for k in ("classifier", "posemb", "representation_size")}
        overrides["gelu"] = gelu
        module = get_model(model_name, config["num_classes"], **overrides)
        _check_shapes(module, params, model_name)
    image_size = None
    if grid is not None:
        stride = 4 * 2 ** (len(module.resnet.num_layers) - 1) if module.resnet else 1
        image_size = (
            grid[0] * module.patch_size[0] * stride,
            grid[1] * module.patch_size[1] * stride,
        )
    return LoadedModel(module, image_size, _input_channels(params))


def _check_shapes(module, params, model_name):
    """Fails with the first mismatching parameter if `model_name` is the wrong model."""
    channels = _input_channels(params)
    size = 224 if module.resnet is None else 64
    size -= size % module.patch_size[0]
    expected = jax.eval_shape(
        lambda: module.init(jax.random.key(0), jnp.zeros((1, size, size, channels)))["params"]
    )
    skip_posemb = lambda path: "posembed_input" in path or "relpos" in path  # Grid-dependent.
    flat_expected = {k: v.shape for k, v in flatten_dict(expected, sep="/").items()}
    flat_actual = {k: np.shape(v) for k, v in flatten_dict(params, sep="/").items()}
    for path in sorted(set(flat_expected) | set(flat_actual)):
        if skip_posemb(path):
            continue
        if flat_expected.get(path) != flat_actual.get(path):
            raise UserError(
                f"the checkpoint does not fit --model={model_name}: {path} is "
                f"{flat_actual.get(path)} in the checkpoint but {flat_expected.get(path)} in the "
                "model. Leave --model out to read the architecture from the checkpoint."
            )


def preprocess(pixels: np.ndarray, image_size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """A uint8 HW or HWC picture resized to `image_size`, as float32 HWC in [-1, 1].

    Like the official fine-tuning evaluation: a plain bilinear resize of the
    whole picture (no crop), then x / 127.5 - 1.
    """
    from PIL import Image

    image = Image.fromarray(np.asarray(pixels, np.uint8))
    image = image.convert("RGB" if channels == 3 else "L")
    image = image.resize((image_size[1], image_size[0]), Image.BILINEAR)
    return np.asarray(image, np.float32).reshape(*image_size, channels) / 127.5 - 1.0


def load_image(path: str, image_size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """The image file at `path` (any format Pillow reads), preprocessed as above."""
    from PIL import Image

    with Image.open(path) as image:
        return preprocess(np.asarray(image.convert("RGB")), image_size, channels)


def top_classes(logits, k: int, class_names: list[str]) -> list[tuple[int, str, float]]:
    """The k most probable (index, name, probability) of one image's logits."""
    probabilities = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32)))
    order = np.argsort(-probabilities)[:k]
    return [(int(i), class_names[i], float(probabilities[i])) for i in order]


def _class_names(num_classes: int, labels_file: str | None) -> list[str]:
    if labels_file:
        with open(labels_file) as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) != num_classes:
            raise UserError(f"{labels_file} has {len(names)} names; the head has {num_classes}.")
        return names
    if num_classes == IMAGENET_CLASSES:
        return imagenet_class_names()
    return [f"class {i}" for i in range(num_classes)]


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.infer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    parser.add_argument(
        "--checkpoint", required=True, help=".npz file or Hugging Face transformers directory"
    )
    parser.add_argument("--model", help="registered model name; default: read from the checkpoint")
    parser.add_argument("--resolution", type=int, help="input size; default: the checkpoint's")
    parser.add_argument("--labels", help="text file with one class name per line")
    parser.add_argument("--top", type=int, default=5, help="how many classes to print")
    return parser.parse_intermixed_args(argv)


def load_model(checkpoint: str, model_name: str | None = None, resolution: int | None = None):
    """(params, LoadedModel) of an .npz checkpoint or a transformers directory,
    its image size set.

    `resolution` overrides the size read from the position table, and is
    required where the checkpoint has none (BiT, posemb='none'). An AugReg
    file name gives the model when `model_name` is None, and its facts are
    printed.
    """
    facts = augreg.parse_name(checkpoint)
    if facts:
        print(f"{checkpoint}: {facts.describe()}")
        model_name = model_name or facts.registered_model
    gelu = "tanh"  # The official code's form, which .npz files are trained with.
    if huggingface.is_transformers_directory(checkpoint):
        imported = huggingface.import_transformers(checkpoint)
        params, gelu = imported.params, imported.gelu
    else:
        params = load_npz(checkpoint)
    with reraised_as_user_error():  # An unknown --model (the registry's ValueError).
        loaded = model_from_params(params, model_name, gelu)
    if resolution:
        loaded = dataclasses.replace(loaded, image_size=(resolution, resolution))
    if loaded.image_size is None:
        raise UserError(
            f"{checkpoint} does not fix the input resolution (no position table); "
            "pass --resolution=PIXELS."
        )
    return params, loaded


def main(argv=None) -> list[list[tuple[int, str, float]]]:
    args = _parse_args(argv)
    params, loaded = load_model(args.checkpoint, args.model, args.resolution)
    if not loaded.module.num_classes:
        raise UserError(f"{args.checkpoint} has no classification head; nothing to classify.")
    class_names = _class_names(loaded.module.num_classes, args.labels)
    with reraised_as_user_error(OSError):  # A missing or unreadable image file.
        images = np.stack(
            [load_image(path, loaded.image_size, loaded.channels) for path in args.images]
        )
    logits = jax.jit(lambda p, x: loaded.module.apply({"params": p}, x, train=False))(
        params, images
    )
    results = []
    for path, image_logits in zip(args.images, logits, strict=True):
        top = top_classes(image_logits, min(args.top, len(class_names)), class_names)
        print(f"{path}:")
        for index, name, probability in top:
            print(f"  {probability:7.2%}  {index:5d}  {name}")
        results.append(top)
    return results


if __name__ == "__main__":
    cli(main)(sys.argv[1:])

"""The model registry: one name per published model, as the official repo spells it.

model = get_model("ViT-B_16", num_classes=1000)
logits = model.apply({"params": params}, images, train=False)
"""

import difflib

import flax.linen as nn

from vit_jax.errors import UserError
from vit_jax.models.mpp import MaskedPatchPredictor
from vit_jax.models.resnet import BiTResNet, ResNetSpec
from vit_jax.models.vit import VisionTransformer

# Table 1 plus the Ti and S widths of later work by the same group.
_VIT_WIDTHS = {
    "Ti": dict(hidden_size=192, mlp_dim=768, num_heads=3, num_layers=12),
    "S": dict(hidden_size=384, mlp_dim=1536, num_heads=6, num_layers=12),
    "B": dict(hidden_size=768, mlp_dim=3072, num_heads=12, num_layers=12),
    "L": dict(hidden_size=1024, mlp_dim=4096, num_heads=16, num_layers=24),
    "H": dict(hidden_size=1280, mlp_dim=5120, num_heads=16, num_layers=32),
}
_VIT_PATCHES = {"Ti": (16,), "S": (16, 32), "B": (8, 16, 32), "L": (16, 32), "H": (14,)}
# Hybrid stems (Sec. 3.1, Sec. 4.1): /32 is ResNet-50's stage-4 output; /16 moves
# stage 4's units into stage 3 and tokenises the stride-16 map.
_HYBRID_STEMS = {16: ResNetSpec((3, 4, 9)), 32: ResNetSpec((3, 4, 6, 3))}
_BIT_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}
_BIT_MODELS = ("R50x1", "R50x2", "R101x1", "R152x1", "R152x2", "R200x3")


def _registry() -> dict[str, tuple[type[nn.Module], dict]]:
    models = {}
    for width, patches in _VIT_PATCHES.items():
        for patch in patches:
            models[f"ViT-{width}_{patch}"] = (
                VisionTransformer,
                dict(patch_size=(patch, patch), **_VIT_WIDTHS[width]),
            )
    for width in ("B", "L"):
        for stride, stem in _HYBRID_STEMS.items():
            models[f"R50+ViT-{width}_{stride}"] = (
                VisionTransformer,
                dict(patch_size=(1, 1), resnet=stem, **_VIT_WIDTHS[width]),
            )
    for name in _BIT_MODELS:
        depth, width_factor = name[1:].split("x")
        spec = ResNetSpec(_BIT_DEPTHS[int(depth)], int(width_factor))
        models[f"BiT-{name}"] = (BiTResNet, dict(spec=spec))
    # Fig. 4's ViT-b/32: "ViT-B with all hidden dimensions halved" (6 heads of 64, like ViT-B's).
    models["ViT-b_32"] = (
        VisionTransformer,
        dict(patch_size=(32, 32), hidden_size=384, mlp_dim=1536, num_heads=6, num_layers=12),
    )
    # Tiny models for tests and CPU demos.
    models["testing"] = (
        VisionTransformer,
        dict(patch_size=(4, 4), hidden_size=16, mlp_dim=32, num_heads=2, num_layers=2),
    )
    models["testing-hybrid"] = (
        VisionTransformer,
        dict(
            patch_size=(1, 1),
            hidden_size=16,
            mlp_dim=32,
            num_heads=2,
            num_layers=1,
            resnet=ResNetSpec((1, 1), 0.5),
        ),
    )
    models["BiT-testing"] = (BiTResNet, dict(spec=ResNetSpec((1, 1), 0.5)))
    return models


MODELS = _registry()
MODEL_NAMES = tuple(MODELS)


def model_check(name: str) -> str:
    """`name` if it is registered, else a ValueError with close matches."""
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODEL_NAMES, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UserError(f"Unknown model {name!r}.{hint} Known models: {', '.join(MODEL_NAMES)}.")
    return name


def model_kwargs(name: str) -> dict:
    """The registered hyper-parameters of `name` (a copy)."""
    return dict(MODELS[model_check(name)][1])


def model_options(name: str) -> tuple[str, ...]:
    """The options (module fields) `get_model(name, ...)` accepts as overrides."""
    module_cls = MODELS[model_check(name)][0]
    return tuple(sorted(f for f in module_cls.__dataclass_fields__ if f not in ("parent", "name")))


def get_model(name: str, num_classes: int | None, **overrides) -> nn.Module:
    """The Flax module `name` with a `num_classes` head (None: no head).

    `overrides` replace any field of the module, e.g. `classifier="gap"`,
    `posemb="learn_2d"`, `representation_size=768`, `dtype=jnp.bfloat16`.
    """
    return _build(MODELS[model_check(name)][0], name, num_classes, overrides)


def get_masked_patch_model(name: str, **overrides) -> MaskedPatchPredictor:
    """`name`'s ViT set up for masked patch prediction (Sec. 4.6): its encoder
    tree is the classifier's, so fine-tuning loads it unchanged."""
    if MODELS[model_check(name)][0] is not VisionTransformer or "resnet" in MODELS[name][1]:
        raise UserError(f"Masked patch prediction needs a plain ViT; {name} is not one.")
    return _build(MaskedPatchPredictor, name, None, overrides)


def _build(module_cls, name, num_classes, overrides):
    kwargs = model_kwargs(name)
    fields = {f for f in module_cls.__dataclass_fields__ if f not in ("parent", "name")}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserError(
            f"{name} ({module_cls.__name__}) has no option {', '.join(unknown)}; "
            f"its options are: {', '.join(sorted(fields))}."
        )
    kwargs.update(overrides)
    return module_cls(num_classes=num_classes, **kwargs)


__all__ = [
    "MODEL_NAMES",
    "BiTResNet",
    "MaskedPatchPredictor",
    "ResNetSpec",
    "VisionTransformer",
    "get_masked_patch_model",
    "get_model",
    "model_options",
]

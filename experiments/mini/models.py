"""The three model families of the one-machine studies, at CPU widths.

A `MiniModel` is a registry name of `vit_jax.models.get_model` plus overrides,
so every study trains the project's own ViT, BiT ResNet and hybrid modules.
ViTs follow the paper's shape rules (MLP 4× the width, 64-wide heads where the
width allows); BiT ResNets keep BiT's GroupNorm and weight standardisation
with fewer units per stage and a width factor (0.5 is the least GroupNorm(32)
allows); hybrids put a short BiT-style stem in front of a 1×1-patch ViT.
"""

import dataclasses

from vit_jax.models import ResNetSpec

FAMILIES = ("ViT", "BiT", "hybrid")


@dataclasses.dataclass(frozen=True)
class MiniModel:
    """`label` names the model in tables and plots; `family` is one of FAMILIES."""

    label: str
    family: str
    model_name: str
    overrides: dict

    def with_options(self, label_suffix: str = "", **options) -> "MiniModel":
        """The same model with more get_model overrides (posemb, classifier, ...)."""
        return dataclasses.replace(
            self, label=self.label + label_suffix, overrides={**self.overrides, **options}
        )


def _heads(width: int) -> int:
    """64-wide heads as in ViT-Ti/S/B, but at least two so attention can split."""
    return max(2, width // 64)


def vit(width: int, depth: int, patch: int, **options) -> MiniModel:
    """A ViT of `depth` blocks of `width`, on `patch`×`patch` pixel patches.

    The paper's defaults (1-D position embeddings, class token) are spelt out,
    so that `vit(...).with_options(posemb="learn_1d")` is the same config, and
    the same run, as `vit(...)`: studies share the pre-trainings they agree on.
    """
    options = dict(posemb="learn_1d", classifier="token", **options)
    return MiniModel(
        f"ViT-{width}x{depth}/{patch}",
        "ViT",
        "testing",
        dict(
            patch_size=(patch, patch),
            hidden_size=width,
            mlp_dim=4 * width,
            num_heads=_heads(width),
            num_layers=depth,
            **options,
        ),
    )


def bit(units_per_stage: tuple[int, ...], width_factor: float) -> MiniModel:
    """A BiT ResNet-v2 with `units_per_stage` bottlenecks (ResNet-50: (3, 4, 6, 3))."""
    units = "-".join(map(str, units_per_stage))
    return MiniModel(
        f"BiT-R{units}x{width_factor:g}",
        "BiT",
        "BiT-testing",
        dict(spec=ResNetSpec(tuple(units_per_stage), width_factor)),
    )


def hybrid(stem_units: tuple[int, ...], width: int, depth: int) -> MiniModel:
    """A BiT stem of `stem_units` (width factor 0.5) tokenised 1×1 into a ViT."""
    units = "-".join(map(str, stem_units))
    return MiniModel(
        f"R{units}+ViT-{width}x{depth}",
        "hybrid",
        "testing-hybrid",
        dict(
            resnet=ResNetSpec(tuple(stem_units), 0.5),
            hidden_size=width,
            mlp_dim=4 * width,
            num_heads=_heads(width),
            num_layers=depth,
        ),
    )


def baseline(**options) -> MiniModel:
    """configs/fashion_mnist.py's ViT (6 blocks of width 64, MLP 128, 4 heads,
    4×4 patches): the model whose from-scratch run on Fashion-MNIST is the
    studies' trained baseline."""
    from configs import fashion_mnist

    config = fashion_mnist.get_config()
    options = dict(posemb="learn_1d", classifier="token", **options)
    model = dict(config.model)
    label = f"ViT-{model['hidden_size']}x{model['num_layers']}/{model['patch_size'][0]}"
    return MiniModel(label, "ViT", config.model_name, dict(model, **options))


# The toy stand-ins (--toy): the smallest member of each family, same options.
_TOY_VIT = dict(hidden_size=16, mlp_dim=32, num_heads=2, num_layers=1)


def shrink(model: MiniModel) -> MiniModel:
    """The smallest model of `model`'s family that keeps its options (patch
    size, position embedding, classifier): what the smoke test trains."""
    if model.family == "BiT":
        overrides = dict(model.overrides, spec=ResNetSpec((1,), 0.5))
    elif model.family == "hybrid":
        overrides = dict(model.overrides, resnet=ResNetSpec((1,), 0.5), **_TOY_VIT)
    else:
        overrides = dict(model.overrides, **_TOY_VIT)
    return dataclasses.replace(model, overrides=overrides)

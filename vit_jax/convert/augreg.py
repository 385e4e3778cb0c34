"""The names of the AugReg checkpoints ("How to train your ViT?", Steiner et
al. 2021), read into the model and the recipe they spell out.

The official repo publishes them under gs://vit_models/augreg/ (its index:
gs://vit_models/augreg/index.csv) as

    B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz
    B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384.npz

the pre-training (model, data set, epochs, learning rate, augmentation, weight
decay, dropout, stochastic depth), then, after `--`, the fine-tuning (data
set, steps, learning rate, resolution). Models are spelled as the official
configs' names less "ViT-", with "_" for "+": Ti_16, S_16, S_32, B_16, B_32,
B_8, L_16, R_Ti_16 (R+ViT-Ti_16), R26_S_32 (R26+ViT-S_32), R50_L_32
(R50+ViT-L_32).
"""

import dataclasses
import os
import re

from vit_jax.models import MODEL_NAMES

_PRETRAINING = re.compile(
    r"(?P<model>(?:R\d*_)?(?:Ti|S|B|L|H)_\d+)"
    r"-(?P<dataset>[a-z0-9]+)-(?P<epochs>\d+)ep-lr_(?P<lr>[0-9.]+)-aug_(?P<augmentation>[a-z]+\d*)"
    r"-wd_(?P<weight_decay>[0-9.]+)-do_(?P<dropout>[0-9.]+)-sd_(?P<stochastic_depth>[0-9.]+)"
)
_FINE_TUNING = re.compile(
    r"(?P<dataset>[a-z0-9_]+)-steps_(?P<steps>\d+k?)-lr_(?P<lr>[0-9.]+)-res_(?P<resolution>\d+)"
)
_DATASETS = {"i21k": "ImageNet-21k", "i1k": "ImageNet-1k"}


@dataclasses.dataclass(frozen=True)
class FineTuning:
    dataset: str  # A TFDS name, e.g. imagenet2012, cifar100, oxford_iiit_pet.
    steps: str  # As the name gives it: "20k" (thousands, rounded: "0k" is 500).
    lr: float
    resolution: int


@dataclasses.dataclass(frozen=True)
class AugRegName:
    """What an AugReg file name says about its checkpoint."""

    model: str  # The official spelling, e.g. "R50+ViT-L_32".
    dataset: str  # Pre-training data: "i21k" or "i1k".
    epochs: int
    lr: float
    augmentation: str  # none, light0/1/2, medium1/2, strong1/2 (the paper's Table 2).
    weight_decay: float
    dropout: float
    stochastic_depth: float
    fine_tuning: FineTuning | None  # None for a pre-trained (upstream) file.

    @property
    def registered_model(self) -> str | None:
        """The vit_jax.models name of the model, where it is registered."""
        return self.model if self.model in MODEL_NAMES else None

    @property
    def resolution(self) -> int:
        """The input size the checkpoint was last trained at (pre-training: 224)."""
        return self.fine_tuning.resolution if self.fine_tuning else 224

    def describe(self) -> str:
        dataset = _DATASETS.get(self.dataset, self.dataset)
        text = (
            f"{self.model} pre-trained on {dataset} for {self.epochs} epochs (lr {self.lr}, "
            f"weight decay {self.weight_decay}, augmentation {self.augmentation}, "
            f"dropout {self.dropout}, stochastic depth {self.stochastic_depth}) at 224 px"
        )
        if self.fine_tuning:
            tuned = self.fine_tuning
            text += (
                f"; fine-tuned on {tuned.dataset} for {tuned.steps} steps (lr {tuned.lr}) "
                f"at {tuned.resolution} px"
            )
        return text + "."


def _official_model_name(spelling: str) -> str:
    """B_16 → ViT-B_16; R50_L_32 → R50+ViT-L_32; R_Ti_16 → R+ViT-Ti_16."""
    parts = spelling.split("_")
    if parts[0].startswith("R"):
        return f"{parts[0]}+ViT-{'_'.join(parts[1:])}"
    return f"ViT-{spelling}"


def parse_name(path) -> AugRegName | None:
    """The facts in an AugReg file name (the path's last component, with or
    without .npz), or None for any other name."""
    name = os.path.basename(os.fspath(path).rstrip("/")).removesuffix(".npz")
    upstream, _, downstream = name.partition("--")
    pre = _PRETRAINING.fullmatch(upstream)
    post = _FINE_TUNING.fullmatch(downstream) if downstream else None
    if pre is None or (downstream and post is None):
        return None
    fine_tuning = None
    if post:
        fine_tuning = FineTuning(
            dataset=post["dataset"],
            steps=post["steps"],
            lr=float(post["lr"]),
            resolution=int(post["resolution"]),
        )
    return AugRegName(
        model=_official_model_name(pre["model"]),
        dataset=pre["dataset"],
        epochs=int(pre["epochs"]),
        lr=float(pre["lr"]),
        augmentation=pre["augmentation"],
        weight_decay=float(pre["weight_decay"]),
        dropout=float(pre["dropout"]),
        stochastic_depth=float(pre["stochastic_depth"]),
        fine_tuning=fine_tuning,
    )

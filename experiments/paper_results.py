"""The paper's published numbers (Tables 2, 5 and 8, App. Table 6, Sec. 4.6), as
data: what the full-scale configs aim at, printed by `python -m experiments.paper
plan` beside each run. Nothing here is a result of this project."""

# Table 2: fine-tuned accuracy (%) per pre-trained model; the last row is the
# pre-training cost in TPUv3-core-days.
TABLE_2_COLUMNS = ("ViT-H/14 JFT", "ViT-L/16 JFT", "ViT-L/16 I21k", "BiT-L R152x4", "Noisy Student")
TABLE_2 = {
    "imagenet2012": (88.55, 87.76, 85.30, 87.54, 88.4),
    "imagenet2012_real": (90.72, 90.54, 88.62, 90.54, 90.55),
    "cifar10": (99.50, 99.42, 99.15, 99.37, None),
    "cifar100": (94.55, 93.90, 93.25, 93.51, None),
    "oxford_iiit_pet": (97.56, 97.32, 94.67, 96.62, None),
    "oxford_flowers102": (99.68, 99.74, 99.61, 99.63, None),
    "vtab": (77.63, 76.28, 72.72, 76.29, None),
    "tpuv3_core_days": (2500, 680, 230, 9900, 12300),
}
# Table 2's columns this project can pre-train: column → (model, pre-training
# dataset, epochs), as the configs spell them.
TABLE_2_PRETRAINING = {
    "ViT-H/14 JFT": ("ViT-H_14", "jft", 14),
    "ViT-L/16 JFT": ("ViT-L_16", "jft", 14),
    "ViT-L/16 I21k": ("ViT-L_16", "imagenet21k", 90),
}


def table_2_core_days(model: str, dataset: str, epochs: int) -> int | None:
    """Table 2's pre-training cost in TPUv3-core-days of (model, dataset,
    epochs); None for a run the table does not report."""
    for column, run in TABLE_2_PRETRAINING.items():
        if run == (model, dataset, epochs):
            return TABLE_2["tpuv3_core_days"][TABLE_2_COLUMNS.index(column)]
    return None


# App. Table 6 (JFT-300M pre-training): model → {epochs: (ImageNet top-1 after
# fine-tuning, pre-training exaFLOPs)}. Names as get_model spells them.
APP_TABLE_6 = {
    "ViT-B_32": {7: (80.73, 55)},
    "ViT-B_16": {7: (84.15, 224)},
    "ViT-L_32": {7: (84.37, 196)},
    "ViT-L_16": {7: (86.30, 783), 14: (87.12, 1567)},
    "ViT-H_14": {14: (88.08, 4262)},
    "BiT-R50x1": {7: (77.54, 50)},
    "BiT-R50x2": {7: (82.12, 199)},
    "BiT-R101x1": {7: (80.67, 96)},
    "BiT-R152x1": {7: (81.88, 141)},
    "BiT-R152x2": {7: (84.97, 563), 14: (85.56, 1126)},
    "BiT-R200x3": {14: (87.22, 3306)},
    "R50+ViT-B_32": {7: (84.90, 106)},
    "R50+ViT-B_16": {7: (85.58, 274)},
    "R50+ViT-L_32": {7: (85.68, 246)},
    "R50+ViT-L_16": {7: (86.60, 859), 14: (87.12, 1668)},
}

# Table 5 (App. C, the numbers of Fig. 3): ImageNet top-1 (%) after fine-tuning
# at 384 px (no Polyak averaging), by pre-training dataset → model. Its ViT-H/14
# has no ImageNet-1k point.
TABLE_5_IMAGENET = {
    "imagenet2012": {"ViT-B_16": 77.91, "ViT-B_32": 73.38, "ViT-L_16": 76.53, "ViT-L_32": 71.16},
    "imagenet21k": {
        "ViT-B_16": 83.97,
        "ViT-B_32": 81.28,
        "ViT-L_16": 85.15,
        "ViT-L_32": 80.99,
        "ViT-H_14": 85.13,
    },
    "jft": {
        "ViT-B_16": 84.15,
        "ViT-B_32": 80.73,
        "ViT-L_16": 87.12,
        "ViT-L_32": 84.37,
        "ViT-H_14": 88.04,
    },
}

# Table 8 (App. D.4): ViT-B/16, 5-shot linear ImageNet accuracy by position embedding.
TABLE_8 = {"none": 0.61382, "learn_1d": 0.64206, "learn_2d": 0.64001, "relative": 0.64032}

# Sec. 4.6: ViT-B/16 pre-trained by masked patch prediction, then fine-tuned on
# ImageNet: top-1 (%), +2% over from scratch, 4% below supervised pre-training.
MASKED_PATCH_PREDICTION_IMAGENET = 79.9

"""The data-size study (Sec. 4.2-4.3, Fig. 3-4): the same models pre-trained on
more and more data.

    --config=configs/data_size_study.py:model=ViT-B_32,data=jft_30m,weight_decay=0.03

Argument keys:
  model       a get_model name that Table 3 trains on JFT (and, for the
              ImageNet / ImageNet-21k points, on those)
  data        imagenet2012 | imagenet21k | jft (Fig. 3), or a random JFT subset
              jft_9m | jft_30m | jft_90m (Fig. 4; 'jft' is the 303M point)
  weight_decay, dropout, label_smoothing
              the regularisation tuned on the smaller sets (Sec. 4.2); -1 keeps
              the Table 3 value of the row. REGULARISATION_SWEEP is the grid.

The rest is the Table 3 row of (model, dataset). A subset is a contiguous slice
of the (already shuffled) JFT training split, after the 50k held-out images, and
is trained for the same number of steps as 7 epochs of the full set, so every
point costs the same compute and only the data differs.
"""

import math

from configs import common, vit_pretrain

JFT_SUBSETS = {"jft_9m": 9_000_000, "jft_30m": 30_000_000, "jft_90m": 90_000_000}
JFT_IMAGES = 303_000_000
JFT_HELD_OUT = 50_000
SUBSET_EPOCHS_OF_FULL_JFT = 7
# The grid searched per (model, data) point; the best on the held-out split wins.
REGULARISATION_SWEEP = {
    "weight_decay": (0.01, 0.03, 0.1, 0.3),
    "dropout": (0.0, 0.1),
    "label_smoothing": (0.0, 0.1),
}
DATA = ("imagenet2012", "imagenet21k", "jft", *JFT_SUBSETS)


def get_config(arg=None):
    choice = common.parse_arg(
        arg, model="ViT-B_32", data="jft", weight_decay=-1.0, dropout=-1.0, label_smoothing=-1.0
    )
    common.check_choice("data", choice.data, DATA)
    dataset = "jft" if choice.data in JFT_SUBSETS else choice.data
    config = vit_pretrain.get_config(f"model={choice.model},dataset={dataset}")

    if choice.data in JFT_SUBSETS:
        size = JFT_SUBSETS[choice.data]
        config.train_split = f"train[{JFT_HELD_OUT}:{JFT_HELD_OUT + size}]"
        config.total_epochs = 0.0
        config.total_steps = math.ceil(
            SUBSET_EPOCHS_OF_FULL_JFT * JFT_IMAGES / common.PRETRAIN_BATCH_SIZE
        )
    if choice.weight_decay >= 0:
        config.weight_decay = choice.weight_decay
    if choice.dropout >= 0:
        if not vit_pretrain.is_vit(choice.model):
            raise ValueError(f"{choice.model} has no dropout: leave the dropout argument out.")
        config.model.dropout_rate = choice.dropout
    if choice.label_smoothing >= 0:
        config.label_smoothing = choice.label_smoothing
    return config

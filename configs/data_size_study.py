"""The two data-size experiments of Sec. 4.3 ("Pre-training data requirements").

Fig. 3, ImageNet → ImageNet-21k → JFT-300M, then fine-tuned on ImageNet:

    --config=configs/data_size_study.py:model=ViT-B_16,data=imagenet21k,label_smoothing=0.1

  Pre-training is the Table 3 row of (model, dataset). "To boost the performance
  on the smaller datasets, we optimize three basic regularization parameters -
  weight decay, dropout, and label smoothing" (Sec. 4.3): REGULARISATION_SWEEP is
  that grid (the paper gives no values; this grid holds Table 3's ImageNet and
  ImageNet-21k rows). Every point is then fine-tuned on ImageNet at 384 px
  (configs/vit_finetune.py:dataset=imagenet2012; Sec. 4.3's footnote: the
  ImageNet pre-trained models are fine-tuned on ImageNet too), and Fig. 3 (its
  numbers: Table 5) plots the best point of each (model, dataset).
  FIG_3_EPOCHS fixes the runs whose Table 3 row has two lengths: ViT-L/16 on
  JFT for 14 epochs (Table 5's 87.12 is Table 6's 14-epoch cell), and the
  ViT-L models on ImageNet-21k for 90 (an assumption: Table 3 lists 30/90).

Fig. 4, random JFT subsets of 9M, 30M, 90M and the full 303M images, 5-shot
linear ImageNet accuracy:

    --config=configs/data_size_study.py:model=ViT-b_32,data=jft_9m

  "We do not perform additional regularization on the smaller subsets and use
  the same hyper-parameters for all settings ... We do, however, use
  early-stopping, and report the best validation accuracy achieved during
  training. To save compute, we report few-shot linear accuracy instead of full
  finetuning accuracy" (Sec. 4.3). So every subset of a model gets the same
  config (the model's Table 3 JFT row, and as many steps as its run on the full
  training split), except the training split; the regularisation arguments are
  an error here. The frozen pre-logits are probed on ImageNet (1/5/10/25 shots,
  vit_jax.evaluate.fewshot) every FEWSHOT_EVERY steps and at the end; Fig. 4's
  number is the best FIG_4_METRIC over those evaluations. ViT-b/32 is ViT-B/32
  with all hidden dimensions halved (Fig. 4's caption); it has no Table 3 row
  and takes ViT-B/32's (an assumption).

Reading the best: the trainer keeps no running best; it writes FIG_4_METRIC at
every probe to the TensorBoard events in the workdir, so the reported number is
their maximum (docs/experiments.md, "The data-size study", has the reader).
The params of that step are not kept (checkpoints rotate); Fig. 4 reports only
the score.

Argument keys:
  model       a get_model name: one Table 3 trains on `data` (Fig. 3), or one
              Table 3 trains on JFT or 'ViT-b_32' (Fig. 4)
  data        imagenet2012 | imagenet21k | jft (Fig. 3), or
              jft_9m | jft_30m | jft_90m | jft_303m (Fig. 4)
  epochs      0: FIG_3_EPOCHS, else the first of the Table 3 row
  weight_decay, dropout, label_smoothing
              Fig. 3 only: a point of the sweep; -1 keeps Table 3's value.

A subset is a contiguous slice of the (already shuffled) JFT training split,
after the 50k held-out images that the evaluation reads.
"""

import math

from configs import common, vit_pretrain
from vit_jax.models import model_kwargs

FIG_3_DATA = ("imagenet2012", "imagenet21k", "jft")
FIG_3_MODELS = ("ViT-B_32", "ViT-B_16", "ViT-L_32", "ViT-L_16", "ViT-H_14")
# (model, dataset) → Table 3 epochs where its row has more than one.
FIG_3_EPOCHS = {
    ("ViT-L_16", "jft"): 14,
    ("ViT-L_16", "imagenet21k"): 90,
    ("ViT-L_32", "imagenet21k"): 90,
}
# The grid searched per (model, dataset) of Fig. 3 on ImageNet and ImageNet-21k.
REGULARISATION_SWEEP = {
    "weight_decay": (0.03, 0.1, 0.3),
    "dropout": (0.0, 0.1),
    "label_smoothing": (0.0, 0.1),
}
REGULARISATION_KEYS = tuple(REGULARISATION_SWEEP)

JFT_IMAGES = 303_000_000
JFT_HELD_OUT = 50_000
# Fig. 4: subset → its number of images (None: the full training split).
JFT_SUBSETS = {"jft_9m": 9_000_000, "jft_30m": 30_000_000, "jft_90m": 90_000_000, "jft_303m": None}
FIG_4_DATA = tuple(JFT_SUBSETS)
FIG_4_MODELS = ("ViT-L_16", "ViT-L_32", "ViT-B_32", "ViT-b_32", "BiT-R50x1", "BiT-R152x2")
# Fig. 4's models without a Table 3 row → the row they take.
TABLE_3_ROW_OF = {"ViT-b_32": "ViT-B_32"}
# 5-shot linear ImageNet: the shots are drawn from a 10% slice of the training
# set (big_vision's few-shot evaluator uses such a subset; about 128 images a
# class) and the accuracy is measured on the validation set.
FEWSHOT_DATASETS = (("imagenet2012", "train[:10%]", "validation"),)
FEWSHOT_EVERY = 10_000  # The held-out evaluation's cadence (common.set_pretraining).
FIG_4_METRIC = "fewshot/imagenet2012/5shot"

DATA = FIG_3_DATA + FIG_4_DATA


def get_config(arg=None):
    choice = common.parse_arg(
        arg,
        model="ViT-B_32",
        data="jft",
        epochs=0,
        weight_decay=-1.0,
        dropout=-1.0,
        label_smoothing=-1.0,
    )
    common.check_choice("data", choice.data, DATA)
    if choice.data in JFT_SUBSETS:
        return _fig_4(choice)
    return _fig_3(choice)


def _fig_3(choice):
    if choice.model in TABLE_3_ROW_OF:
        raise ValueError(f"{choice.model} is a Fig. 4 model: pick data from {FIG_4_DATA}.")
    epochs = choice.epochs or FIG_3_EPOCHS.get((choice.model, choice.data), 0)
    config = vit_pretrain.get_config(f"model={choice.model},dataset={choice.data},epochs={epochs}")
    if choice.weight_decay >= 0:
        config.weight_decay = choice.weight_decay
    if choice.dropout >= 0:
        if not vit_pretrain.is_vit(choice.model):
            raise ValueError(f"{choice.model} has no dropout: leave the dropout argument out.")
        config.model.dropout_rate = choice.dropout
    if choice.label_smoothing >= 0:
        config.label_smoothing = choice.label_smoothing
    return config


def _fig_4(choice):
    tuned = [key for key in REGULARISATION_KEYS if choice[key] >= 0]
    if tuned:
        raise ValueError(
            f"{', '.join(tuned)}: Fig. 4 uses the same hyper-parameters for every JFT subset, "
            "with no extra regularisation on the smaller ones (Sec. 4.3); the sweep is "
            f"Fig. 3's (data={' | '.join(FIG_3_DATA)})."
        )
    row = TABLE_3_ROW_OF.get(choice.model, choice.model)
    config = vit_pretrain.get_config(f"model={row},dataset=jft,epochs={choice.epochs}")
    if row != choice.model:
        config.model_name = choice.model
        config.model.representation_size = model_kwargs(choice.model)["hidden_size"]

    size = JFT_SUBSETS[choice.data]
    if size is not None:
        config.train_split = f"train[{JFT_HELD_OUT}:{JFT_HELD_OUT + size}]"
    # As many steps as the row's epochs of the full training split, on every subset.
    config.total_steps = math.ceil(
        config.total_epochs * (JFT_IMAGES - JFT_HELD_OUT) / config.batch_size
    )
    config.total_epochs = 0.0
    config.fewshot_datasets = FEWSHOT_DATASETS
    config.fewshot_every = FEWSHOT_EVERY
    return config

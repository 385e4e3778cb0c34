"""Pre-training, every row of the paper's Table 3 (and the App. Table 6 cells).

    python -m vit_jax.main --workdir=DIR \
        --config=configs/vit_pretrain.py:model=ViT-L_16,dataset=jft,epochs=14

Argument keys: model (a get_model name), dataset ('jft' | 'imagenet21k' |
'imagenet2012'), epochs (0: the row's first value). Only the (model, dataset,
epochs) cells of the tables below exist; anything else is an error that lists them.

Common to all rows (Sec. 4.1, App. B.1): Adam (β1 0.9, β2 0.999), batch 4096,
10k linear warm-up steps, 224 px with an Inception crop and a flip
(common.set_pretraining). Gradients are clipped at global norm 1 on ImageNet-1k
only, as Table 3's caption says ("For ImageNet we found it beneficial to
additionally apply gradient clipping at global norm 1"); big_vision's
ImageNet-21k recipe (configs/vit_i21k.py there) clips too, the paper's does not.
ViTs keep the pre-logits layer (tanh, width D) during pre-training; fine-tuning
drops it. JFT and ImageNet-21k are trained with sigmoid cross-entropy
(multi-label, as the official code), ImageNet-1k with softmax; the sigmoid heads
start at bias -10 so that the initial loss is small.
"""

from configs import common
from vit_jax.config import default_config
from vit_jax.models import model_kwargs

VIT_IMAGENET_MODELS = ("ViT-B_16", "ViT-B_32", "ViT-L_16", "ViT-L_32", "ViT-H_14")

# Table 3: (models, dataset, epochs, base LR, LR decay, weight decay, dropout).
TABLE_3 = (
    (("ViT-B_16", "ViT-B_32"), "jft", (7,), 8e-4, "linear", 0.1, 0.0),
    (("ViT-L_32",), "jft", (7,), 6e-4, "linear", 0.1, 0.0),
    (("ViT-L_16",), "jft", (7, 14), 4e-4, "linear", 0.1, 0.0),
    (("ViT-H_14",), "jft", (14,), 3e-4, "linear", 0.1, 0.0),
    (("BiT-R50x1", "BiT-R50x2"), "jft", (7,), 1e-3, "linear", 0.1, 0.0),
    (("BiT-R101x1",), "jft", (7,), 8e-4, "linear", 0.1, 0.0),
    (("BiT-R152x1", "BiT-R152x2"), "jft", (7,), 6e-4, "linear", 0.1, 0.0),
    (("R50+ViT-B_16", "R50+ViT-B_32"), "jft", (7,), 8e-4, "linear", 0.1, 0.0),
    (("R50+ViT-L_32",), "jft", (7,), 2e-4, "linear", 0.1, 0.0),
    (("R50+ViT-L_16",), "jft", (7, 14), 4e-4, "linear", 0.1, 0.0),
    (("ViT-B_16", "ViT-B_32"), "imagenet21k", (90,), 1e-3, "linear", 0.03, 0.1),
    (("ViT-L_16", "ViT-L_32"), "imagenet21k", (30, 90), 1e-3, "linear", 0.03, 0.1),
    (VIT_IMAGENET_MODELS, "imagenet2012", (300,), 3e-3, "cosine", 0.3, 0.1),
)
# App. Table 6 also has BiT R152x2 for 14 epochs and R200x3 for 14 epochs, which
# Table 3 does not list: they take the R152 row's hyper-parameters (an assumption).
NOT_IN_TABLE_3 = (
    (("BiT-R152x2",), "jft", (14,), 6e-4, "linear", 0.1, 0.0),
    (("BiT-R200x3",), "jft", (14,), 6e-4, "linear", 0.1, 0.0),
)

SIGMOID_HEAD_BIAS = -10.0
# Table 3's caption: global-norm clipping for ImageNet-1k pre-training only.
GRAD_CLIP_NORM = {"jft": 0.0, "imagenet21k": 0.0, "imagenet2012": 1.0}

# Per dataset: (train split, held-out eval split, loss). JFT has one split: its
# first 50k images are held out for evaluation.
DATA = {
    "jft": ("train[50000:]", "train[:50000]", "sigmoid_xent"),
    "imagenet21k": ("minitrain", "minival", "sigmoid_xent"),
    "imagenet2012": ("train", "validation", "softmax_xent"),
}


def rows():
    """Every (model, dataset, epochs, lr, decay, wd, dropout) cell, one per line."""
    for models, dataset, epochs_list, lr, decay, wd, dropout in TABLE_3 + NOT_IN_TABLE_3:
        for model in models:
            for epochs in epochs_list:
                yield model, dataset, epochs, lr, decay, wd, dropout


def find_row(model: str, dataset: str, epochs: int = 0):
    """The row for (model, dataset, epochs); epochs=0 picks the row's first."""
    common.check_choice("dataset", dataset, tuple(DATA))
    matches = [r for r in rows() if r[0] == model and r[1] == dataset]
    if not matches:
        models = sorted({r[0] for r in rows() if r[1] == dataset})
        raise ValueError(
            f"Table 3 has no row for model={model} on dataset={dataset}; "
            f"its models there: {', '.join(models)}."
        )
    if epochs == 0:
        return matches[0]
    for row in matches:
        if row[2] == epochs:
            return row
    raise ValueError(
        f"Table 3 trains {model} on {dataset} for {', '.join(str(r[2]) for r in matches)} "
        f"epochs, not {epochs}."
    )


def is_vit(model: str) -> bool:
    return not model.startswith("BiT-")


def get_config(arg=None):
    choice = common.parse_arg(arg, model="ViT-B_16", dataset="jft", epochs=0)
    model, dataset, epochs, lr, decay, weight_decay, dropout = find_row(
        choice.model, choice.dataset, choice.epochs
    )
    train_split, test_split, loss = DATA[dataset]
    config = default_config()

    if is_vit(model):
        common.set_model(
            config,
            model,
            representation_size=model_kwargs(model)["hidden_size"],  # pre-logits
            dropout_rate=dropout,
            head_bias_init=SIGMOID_HEAD_BIAS if loss == "sigmoid_xent" else 0.0,
        )
    else:
        common.set_model(config, model)  # BiT: no dropout, no pre-logits.

    config.dataset = dataset
    config.train_split = train_split
    config.test_split = test_split
    config.loss = loss
    common.set_pretraining(
        config,
        lr=lr,
        lr_decay=decay,
        weight_decay=weight_decay,
        grad_clip_norm=GRAD_CLIP_NORM[dataset],
        epochs=epochs,
    )
    return config

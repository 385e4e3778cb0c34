"""Fine-tuning a pre-trained model, per the paper's Table 4 and Table 2.

    python -m vit_jax.main --workdir=DIR \
        --config=configs/vit_finetune.py:model=ViT-B_16,dataset=cifar10,lr=0.003,pretrained=B16.npz

Argument keys:
  model       a get_model name (the architecture of the pre-trained checkpoint)
  dataset     imagenet2012 | cifar10 | cifar100 | oxford_iiit_pet | oxford_flowers102
  lr          one of the dataset's Table 4 sweep (0: the sweep's middle value)
  pretrained  path of the pre-trained .npz (official or our export)
  holdout     true: train on the held-out-less part and evaluate on the held-out
              part (10% Pets/Flowers, 2% CIFAR, 1% ImageNet), to pick the lr
  table2      true: Table 2's setting — 512 px for ViT-L/16, 518 px for ViT-H/14,
              Polyak averaging of the weights with decay 0.9999
  accum       gradient-accumulation micro-batches per step of 512 (memory only)

Common to all (Sec. 4.1, App. B.1.1): SGD with momentum 0.9, batch 512, 500
linear warm-up steps then cosine decay, no weight decay, clipping at global
norm 1, 384 px (ViT-H/14: 378, the nearest multiple of 14). The head is a new
zero-initialised linear layer and the pre-logits layer is dropped; position
embeddings are resized to the new grid (vit_jax.checkpoint.load_pretrained).
"""

from configs import common
from vit_jax.models import model_kwargs
from vit_jax.train import default_config

# Table 4: dataset → (steps, LR sweep).
TABLE_4 = {
    "imagenet2012": (20_000, (0.003, 0.01, 0.03, 0.06)),
    "cifar100": (10_000, (0.001, 0.003, 0.01, 0.03)),
    "cifar10": (10_000, (0.001, 0.003, 0.01, 0.03)),
    "oxford_iiit_pet": (500, (0.001, 0.003, 0.01, 0.03)),
    "oxford_flowers102": (500, (0.001, 0.003, 0.01, 0.03)),
}
# Table 2 fine-tunes the two big models at a higher resolution, with Polyak averaging.
TABLE_2_RESOLUTION = {"ViT-L_16": 512, "ViT-H_14": 518}
TABLE_2_POLYAK_DECAY = 0.9999

BATCH_SIZE = 512
RESOLUTION = 384
SGD_MOMENTUM = 0.9
WARMUP_STEPS = 500
GRAD_CLIP_NORM = 1.0


def fit_to_patches(model: str, resolution: int) -> int:
    """The multiple of a plain ViT's patch size nearest to `resolution` (ViT-H/14
    at "384" runs at 378, a 27x27 grid); other models keep `resolution`."""
    options = model_kwargs(model)
    if "patch_size" not in options or options.get("resnet") is not None:
        return resolution
    patch = options["patch_size"][0]
    return round(resolution / patch) * patch


def default_lr(sweep) -> float:
    """The lr used when none is given: the sweep's upper-middle value."""
    return sweep[len(sweep) // 2]


def finetune_config(config, *, steps: int, lr: float, resolution: int, pretrained: str):
    """The Table 4 recipe, shared with the VTAB and masked-patch configs."""
    config.pretrained = pretrained
    config.image_size = resolution
    config.pp_train = common.recipe_following_image_size(config, "finetune")
    config.pp_eval = common.recipe_following_image_size(config, "finetune_eval")
    config.batch_size = BATCH_SIZE
    config.total_steps = steps
    config.total_epochs = 0.0

    config.optimizer = "sgd"
    config.momentum = SGD_MOMENTUM
    config.lr = lr
    config.weight_decay = 0.0
    config.warmup_steps = WARMUP_STEPS
    config.lr_decay = "cosine"
    config.end_lr_fraction = 0.0
    config.grad_clip_norm = GRAD_CLIP_NORM
    config.loss = "softmax_xent"
    config.label_smoothing = 0.0

    config.log_every = 50
    config.eval_every = max(steps // 10, 100)
    config.checkpoint_every = 1_000
    config.keep_checkpoints = 1
    return config


def get_config(arg=None):
    choice = common.parse_arg(
        arg,
        model="ViT-B_16",
        dataset="cifar10",
        lr=0.0,
        pretrained="",
        holdout=False,
        table2=False,
        accum=1,
    )
    common.check_choice("dataset", choice.dataset, tuple(TABLE_4))
    steps, sweep = TABLE_4[choice.dataset]
    lr = choice.lr or default_lr(sweep)
    common.check_choice(f"lr (Table 4, {choice.dataset})", lr, sweep)
    resolution, polyak = fit_to_patches(choice.model, RESOLUTION), 0.0
    if choice.table2:
        common.check_choice("model (Table 2)", choice.model, tuple(TABLE_2_RESOLUTION))
        resolution, polyak = TABLE_2_RESOLUTION[choice.model], TABLE_2_POLYAK_DECAY

    config = default_config()
    common.set_model(config, choice.model)  # No pre-logits, no dropout.
    config.dataset = choice.dataset
    config.train_split = "minitrain" if choice.holdout else "train"
    config.test_split = "minival" if choice.holdout else "test"
    finetune_config(config, steps=steps, lr=lr, resolution=resolution, pretrained=choice.pretrained)
    config.accum_steps = choice.accum
    config.ema_decay = polyak
    return config

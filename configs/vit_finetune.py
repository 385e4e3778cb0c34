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
  table2      true (ImageNet only): Table 2's ImageNet setting, 512 px for ViT-L/16
              and 518 px for ViT-H/14 with Polyak averaging of the weights, decay
              0.9999 ("For ImageNet results in Table 2, we fine-tuned at higher
              resolution ... and also used Polyak & Juditsky (1992) averaging");
              Table 2's other columns are at 384 px without averaging
  accum       gradient-accumulation micro-batches per step of 512 (memory only)

Common to all (Sec. 4.1, App. B.1.1; common.set_finetuning): SGD with momentum
0.9, batch 512, linear warm-up then cosine decay, no weight decay, clipping at
global norm 1, 384 px (ViT-H/14: 378, the nearest multiple of 14). The warm-up
is the official fine-tuning code's 500 steps, except on the 500-step Pets and
Flowers runs, which warm up for 100 as big_vision's configs/transfer.py does.
The head is a new zero-initialised linear layer and the pre-logits layer is
dropped; position embeddings are resized to the new grid
(vit_jax.checkpoint.load_pretrained).
"""

from configs import common
from vit_jax.config import default_config
from vit_jax.models import model_kwargs

# Table 4: dataset → (steps, LR sweep).
TABLE_4 = {
    "imagenet2012": (20_000, (0.003, 0.01, 0.03, 0.06)),
    "cifar100": (10_000, (0.001, 0.003, 0.01, 0.03)),
    "cifar10": (10_000, (0.001, 0.003, 0.01, 0.03)),
    "oxford_iiit_pet": (500, (0.001, 0.003, 0.01, 0.03)),
    "oxford_flowers102": (500, (0.001, 0.003, 0.01, 0.03)),
}
# Table 2's ImageNet column: the two big models at a higher resolution, Polyak-averaged.
TABLE_2_RESOLUTION = {"ViT-L_16": 512, "ViT-H_14": 518}
TABLE_2_POLYAK_DECAY = 0.9999

WARMUP_STEPS = 500
# Table 4 trains Pets and Flowers for 500 steps in all: a 500-step warm-up would
# leave no decay (and optim rejects it). big_vision's transfer config uses 100.
SHORT_RUN_WARMUP_STEPS = {"oxford_iiit_pet": 100, "oxford_flowers102": 100}


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
    resolution, polyak = fit_to_patches(choice.model, common.FINETUNE_RESOLUTION), 0.0
    if choice.table2:
        common.check_choice(
            "dataset (Table 2's 512/518 px and Polyak averaging)", choice.dataset, ("imagenet2012",)
        )
        common.check_choice("model (Table 2)", choice.model, tuple(TABLE_2_RESOLUTION))
        resolution, polyak = TABLE_2_RESOLUTION[choice.model], TABLE_2_POLYAK_DECAY

    config = default_config()
    common.set_model(config, choice.model)  # No pre-logits, no dropout.
    config.dataset = choice.dataset
    if choice.holdout:
        config.train_split, config.test_split = "minitrain", "minival"
    common.set_finetuning(
        config,
        steps=steps,
        warmup_steps=SHORT_RUN_WARMUP_STEPS.get(choice.dataset, WARMUP_STEPS),
        lr=lr,
        resolution=resolution,
        pretrained=choice.pretrained,
    )
    config.accum_steps = choice.accum
    config.ema_decay = polyak
    return config

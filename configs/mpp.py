"""Self-supervised masked patch prediction (Sec. 4.6, App. B.1.2) and its
fine-tuning on ImageNet.

    --config=configs/mpp.py                                  # pre-training
    --config=configs/mpp.py:stage=finetune,pretrained=DIR/params.npz,lr=0.01

Pre-training corrupts 50% of the patch embeddings (80% [mask] token, 10% a
random other patch, 10% kept) and predicts each corrupted patch's 3-bit mean
colour, 512 classes (vit_jax.models.mpp). ViT-B/16 on JFT-300M: 1M steps at
batch 4096, Adam with base lr 2e-4, 10k warm-up steps, cosine decay. The paper
does not state the weight decay: Table 3's JFT value 0.1 is used.

Fine-tuning is Table 4's ImageNet recipe (vit_finetune.py) from the
self-supervised checkpoint. Published result: 79.9% ImageNet top-1.

Argument keys: stage (pretrain | finetune), model, pretrained, lr (finetune).
"""

from configs import common, vit_finetune
from vit_jax.train import default_config

STEPS = 1_000_000
BATCH_SIZE = 4096
LR = 2e-4
WARMUP_STEPS = 10_000
WEIGHT_DECAY = 0.1  # Not in the paper; Table 3's JFT value.
RESOLUTION = 224


def pretrain_config(model: str):
    config = default_config()
    config.objective = "masked_patch_prediction"
    common.set_model(config, model)  # The MPP head replaces pre-logits and head.
    config.dataset = "jft"
    config.train_split = "train[50000:]"
    config.test_split = "train[:50000]"
    config.image_size = RESOLUTION
    config.pp_train = common.recipe_following_image_size(config, "pretrain")
    config.pp_eval = common.recipe_following_image_size(config, "pretrain_eval")
    config.batch_size = BATCH_SIZE
    config.total_steps = STEPS
    config.total_epochs = 0.0

    config.optimizer = "adam"
    config.lr = LR
    config.b1, config.b2 = 0.9, 0.999
    config.weight_decay = WEIGHT_DECAY
    config.warmup_steps = WARMUP_STEPS
    config.lr_decay = "cosine"
    config.end_lr_fraction = 0.0
    config.grad_clip_norm = 1.0
    config.accum_steps = 1
    config.ema_decay = 0.0

    config.log_every = 100
    config.eval_every = 10_000
    config.checkpoint_every = 2_000
    config.keep_checkpoints = 2
    return config


def get_config(arg=None):
    choice = common.parse_arg(arg, stage="pretrain", model="ViT-B_16", pretrained="", lr=0.0)
    common.check_choice("stage", choice.stage, ("pretrain", "finetune"))
    if choice.stage == "pretrain":
        return pretrain_config(choice.model)
    finetune_arg = f"model={choice.model},dataset=imagenet2012,pretrained={choice.pretrained}"
    if choice.lr:
        finetune_arg += f",lr={choice.lr}"
    return vit_finetune.get_config(finetune_arg)

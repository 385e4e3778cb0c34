"""Self-supervised masked patch prediction (Sec. 4.6, App. B.1.2) and its
fine-tuning on ImageNet.

    --config=configs/mpp.py                                  # pre-training
    --config=configs/mpp.py:stage=finetune,pretrained=DIR/params.npz,lr=0.01

Pre-training corrupts 50% of the patch embeddings (80% [mask] token, 10% a
random other patch, 10% kept) and predicts each corrupted patch's 3-bit mean
colour, 512 classes (vit_jax.models.mpp). ViT-B/16 on JFT-300M: 1M steps at
batch 4096, Adam with base lr 2e-4, 10k warm-up steps, cosine decay. The paper
does not state the weight decay: Table 3's JFT value 0.1 is used; nor clipping:
none, as on JFT in Table 3.

Fine-tuning is Table 4's ImageNet recipe (vit_finetune.py) from the
self-supervised checkpoint. Published result: 79.9% ImageNet top-1.

Argument keys: stage (pretrain | finetune), model, pretrained, lr (finetune).
"""

from configs import common, vit_finetune, vit_pretrain
from vit_jax.config import default_config

STEPS = 1_000_000
LR = 2e-4
WEIGHT_DECAY = 0.1  # Not in the paper; Table 3's JFT value.


def pretrain_config(model: str):
    config = default_config()
    config.objective = "masked_patch_prediction"
    common.set_model(config, model)  # The MPP head replaces pre-logits and head.
    config.dataset = "jft"
    config.train_split, config.test_split, _ = vit_pretrain.DATA["jft"]
    common.set_pretraining(
        config,
        lr=LR,
        lr_decay="cosine",
        weight_decay=WEIGHT_DECAY,
        grad_clip_norm=vit_pretrain.GRAD_CLIP_NORM["jft"],
        steps=STEPS,
    )
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

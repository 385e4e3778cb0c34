"""ViT-B/16 pre-trained on ImageNet-21k, Table 3's row
"ViT-B/{16,32} | ImageNet-21k | 90 epochs | 1e-3 | linear | 0.03 | 0.1", as a
worked example of a paper config.

    python -m vit_jax.main --config=configs/vit_b16_imagenet21k.py --workdir=DIR

It sets what differs from vit_jax.config.default_config() (the schema, every field
explained) and takes the recipe every pre-training shares from
common.set_pretraining; configs/vit_pretrain.py builds the same config from
Table 3 (a test checks the two agree). On a machine without ImageNet-21k the run
stops at once, saying how to prepare it. To try the recipe on local data, shrink it:

    python -m vit_jax.main --config=configs/vit_b16_imagenet21k.py --workdir=DIR \
        --config.dataset=digits --config.train_split=train --config.test_split=test \
        --config.model_name=testing --config.model.representation_size=16 \
        --config.image_size=16 --config.batch_size=64 --config.total_epochs=2 \
        --config.warmup_steps=5
"""

from configs import common
from vit_jax.config import default_config


def get_config(arg=None):
    common.parse_arg(arg)  # No variants: rejects any argument.
    config = default_config()

    # ViT-B/16 with the pre-training head: pre-logits (tanh, width 768) and a
    # sigmoid head starting at bias -10; dropout 0.1 (Table 3, ImageNet-21k).
    common.set_model(
        config, "ViT-B_16", representation_size=768, dropout_rate=0.1, head_bias_init=-10.0
    )

    # ImageNet-21k (14M images, 21,843 classes) minus the 1% held out for eval;
    # multi-label sigmoid cross-entropy, as the official code.
    config.dataset = "imagenet21k"
    config.train_split = "minitrain"
    config.test_split = "minival"
    config.loss = "sigmoid_xent"

    # Adam at lr 1e-3 (10k warm-up steps, then linear decay), weight decay 0.03,
    # 90 epochs; no gradient clipping: Table 3's caption clips ImageNet-1k only
    # (big_vision's ImageNet-21k recipe does clip, at global norm 1).
    common.set_pretraining(
        config, lr=1e-3, lr_decay="linear", weight_decay=0.03, grad_clip_norm=0.0, epochs=90
    )
    return config

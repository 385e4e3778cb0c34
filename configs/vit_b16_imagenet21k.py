"""ViT-B/16 pre-trained on ImageNet-21k: the charter's example, Table 3's row
"ViT-B/{16,32} | ImageNet-21k | 90 epochs | 1e-3 | linear | 0.03 | 0.1".

    python -m vit_jax.main --config=configs/vit_b16_imagenet21k.py --workdir=DIR

Every field is spelled out here to be read top to bottom; configs/vit_pretrain.py
holds the same numbers as Table 3's rows (a test checks the two agree). On a
machine without ImageNet-21k the run stops at once, saying how to prepare it.
To try the recipe on local data, shrink it:

    python -m vit_jax.main --config=configs/vit_b16_imagenet21k.py --workdir=DIR \
        --config.dataset=digits --config.train_split=train --config.test_split=test \
        --config.model_name=testing --config.model.representation_size=16 \
        --config.image_size=16 --config.batch_size=64 --config.total_epochs=2 \
        --config.warmup_steps=5
"""

from configs import common
from vit_jax.train import default_config


def get_config(arg=None):
    common.parse_arg(arg)  # No variants: rejects any argument.
    config = default_config()

    # ViT-B/16 with the pre-training head: pre-logits (tanh, width 768) and a
    # sigmoid head starting at bias -10; dropout 0.1 (Table 3, ImageNet-21k).
    common.set_model(
        config, "ViT-B_16", representation_size=768, dropout_rate=0.1, head_bias_init=-10.0
    )

    # ImageNet-21k (14M images, 21,843 classes) minus the 1% held out for eval.
    config.dataset = "imagenet21k"
    config.data_dir = None
    config.train_split = "minitrain"
    config.test_split = "minival"
    config.image_size = 224
    config.pp_train = common.recipe_following_image_size(config, "pretrain")
    config.pp_eval = common.recipe_following_image_size(config, "pretrain_eval")
    config.batch_size = 4096
    config.eval_batch_size = 0
    config.total_steps = 0
    config.total_epochs = 90.0

    # Adam, lr 1e-3 with 10k warm-up steps then linear decay, weight decay 0.03,
    # clipping at global norm 1; multi-label sigmoid cross-entropy.
    config.optimizer = "adam"
    config.lr = 1e-3
    config.b1 = 0.9
    config.b2 = 0.999
    config.weight_decay = 0.03
    config.warmup_steps = 10_000
    config.lr_decay = "linear"
    config.end_lr_fraction = 0.0
    config.grad_clip_norm = 1.0
    config.accum_steps = 1
    config.loss = "sigmoid_xent"
    config.label_smoothing = 0.0
    config.ema_decay = 0.0
    config.seed = 0

    config.log_every = 100
    config.eval_every = 10_000
    config.checkpoint_every = 2_000
    config.keep_checkpoints = 2
    return config

"""The README's main job: a small ViT trained from scratch on scikit-learn's
digits (1,797 real 8x8 handwritten images, bundled with the package, so no
download). Reaches about 95% test accuracy in 800 steps, 2-3 minutes on 2
CPU cores (measured: 95.6% while other jobs shared the cores).

    make run
    # = python -m vit_jax.main --config=configs/demo.py --workdir=workdirs/demo

This file is the reference for the config schema: every field the trainer
reads is set here (docs/training.md explains each one).
"""

import ml_collections

from vit_jax.train import default_config


def get_config(arg=None):
    del arg
    config = default_config()

    # Model: a 3-layer ViT of width 64 on 2x2 patches (16 tokens + class token).
    config.model_name = "testing"
    config.model = ml_collections.ConfigDict(
        dict(
            patch_size=(2, 2),
            hidden_size=64,
            mlp_dim=128,
            num_heads=4,
            num_layers=3,
            dropout_rate=0.1,  # 1,437 training images: regularise.
        )
    )

    # Data: native 8x8 grey-scale images scaled to [-1, 1], one-hot labels.
    config.dataset = "digits"
    config.data_dir = None
    config.train_split = "train"
    config.test_split = "test"
    config.image_size = 8
    config.pp_train = "value_range(-1,1)|onehot(10)"
    config.pp_eval = "value_range(-1,1)|onehot(10)"
    config.batch_size = 128
    config.eval_batch_size = 128
    config.prefetch = 2
    config.total_steps = 800
    config.total_epochs = 0.0

    # Optimiser: the paper's pre-training recipe (Adam, decoupled weight decay,
    # linear warm-up, cosine decay, clipping at global norm 1).
    config.optimizer = "adam"
    config.lr = 1e-3
    config.b1 = 0.9
    config.b2 = 0.999
    config.adam_eps = 1e-8
    config.momentum = 0.9  # Read by 'sgd' only.
    config.weight_decay = 0.1
    config.wd_mults = ((r".*/kernel$", 1.0),)
    config.lr_mults = ()
    config.warmup_steps = 50
    config.lr_decay = "cosine"
    config.end_lr_fraction = 0.0
    config.grad_clip_norm = 1.0
    config.accum_steps = 1

    config.loss = "softmax_xent"
    config.label_smoothing = 0.0
    config.ema_decay = 0.99  # Short run: a short average (Table 2 uses 0.9999).
    config.seed = 0

    # One device on a laptop, data parallel over all devices elsewhere.
    config.mesh = (("data", -1), ("fsdp", 1))
    config.sharding_rules = ((".*", "fsdp"),)

    config.log_every = 100
    config.eval_every = 200
    config.checkpoint_every = 400
    config.keep_checkpoints = 2
    config.pretrained = ""
    config.export_npz = True
    return config

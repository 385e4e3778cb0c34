"""A tiny run for tests: the 'testing' ViT (4x4 patches, width 16, 2 layers) on
8x8 digits, a few steps; default_config() gives the rest.

python -m vit_jax.main --config=configs/testing.py --workdir=/tmp/t --config.total_steps=5
"""

from vit_jax.config import default_config


def get_config(arg=None):
    del arg
    config = default_config()
    config.image_size = 8
    config.pp_train = "value_range(-1,1)|onehot"
    config.pp_eval = "value_range(-1,1)|onehot"
    config.batch_size = 16
    config.total_steps = 6
    config.warmup_steps = 2
    config.log_every = 2
    config.checkpoint_every = 2
    config.keep_checkpoints = 2
    return config

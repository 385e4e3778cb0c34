"""VTAB-1k transfer (Table 2's "VTAB (19 tasks)" row, Sec. 4.1).

    python -m vit_jax.main --workdir=DIR \
        --config=configs/vit_vtab.py:model=ViT-B_16,task=dtd,pretrained=B16.npz

Argument keys: model, task (one of the 19 below), pretrained (.npz path), holdout
(true: train on train800 and evaluate on val200, VTAB's hyper-parameter split;
false: train on all 1000 examples, evaluate on the test split).

Every task uses the same recipe (App. B.1.1): 2,500 steps at lr 0.01, otherwise
the Table 4 fine-tuning recipe (SGD momentum 0.9, batch 512, cosine, 500 warm-up
steps, no weight decay, clipping at 1, 384 px). The training augmentation follows
the VTAB protocol: an Inception crop and a flip, less the crop or the flip where
it would change the task's label (vit_jax.data.vtab.train_recipe: no crop on the
structured tasks of counts, distances, positions and poses; no flip on SVHN,
dSprites and smallNORB azimuth).
"""

from configs import common, vit_finetune
from vit_jax.config import default_config
from vit_jax.data import VTAB_GROUPS
from vit_jax.data.vtab import train_recipe

STEPS = 2_500
LR = 0.01
TASKS = tuple(task for group in VTAB_GROUPS.values() for task in group)


def get_config(arg=None):
    choice = common.parse_arg(arg, model="ViT-B_16", task="dtd", pretrained="", holdout=False)
    common.check_choice("task (VTAB-1k)", choice.task, TASKS)
    config = default_config()
    common.set_model(config, choice.model)
    config.dataset = f"vtab/{choice.task}"
    config.train_split = "train800" if choice.holdout else "train800val200"
    config.test_split = "val200" if choice.holdout else "test"
    common.set_finetuning(
        config,
        steps=STEPS,
        warmup_steps=vit_finetune.WARMUP_STEPS,
        lr=LR,
        resolution=vit_finetune.fit_to_patches(choice.model, common.FINETUNE_RESOLUTION),
        pretrained=choice.pretrained,
        train_recipe=train_recipe(choice.task),
    )
    return config

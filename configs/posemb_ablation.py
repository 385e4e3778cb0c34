"""Position-embedding ablation (App. D.4, Table 8): ViT-B/16 with no, 1-D, 2-D
or relative position embeddings, compared by 5-shot linear ImageNet accuracy.

    --config=configs/posemb_ablation.py:posemb=learn_2d

Argument keys: posemb (none | learn_1d | learn_2d | relative), model.
Pre-training is the Table 3 JFT-300M row of the model (7 epochs); only the
position embedding changes (vit_jax.models.vit: AddPositionEmbs,
RelativePositionBias).
"""

from configs import common, vit_pretrain

POSEMB_KINDS = ("none", "learn_1d", "learn_2d", "relative")


def get_config(arg=None):
    choice = common.parse_arg(arg, posemb="learn_1d", model="ViT-B_16")
    common.check_choice("posemb", choice.posemb, POSEMB_KINDS)
    config = vit_pretrain.get_config(f"model={choice.model},dataset=jft,epochs=7")
    config.model.posemb = choice.posemb
    return config

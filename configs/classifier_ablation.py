"""Class token vs. global average pooling (App. D.3, Fig. 9): both classifiers
reach the same accuracy, but GAP needs a lower learning rate.

    --config=configs/classifier_ablation.py:classifier=gap

Argument keys: classifier (token | gap), lr (0: the classifier's own, below),
model. Pre-training is the model's Table 3 JFT-300M row (7 epochs) with only
the classifier and the learning rate changed. GAP averages the patch tokens, has
no class token (vit_jax.models.vit) and, as App. D.3 describes it ("global
average-pooling (GAP) them, followed by a linear classifier—just like ResNet's
final feature map"), no pre-logits layer: the pooled tokens go straight to the
linear head. The class token keeps the pre-training head of Sec. 3.1 (pre-logits
MLP, tanh).
"""

from configs import common, vit_pretrain

# Fig. 9: the class token trains well at 8e-4, GAP at 8e-4 lags; GAP at 3e-4 matches.
LEARNING_RATES = {"token": (8e-4,), "gap": (8e-4, 3e-4)}
BEST_LR = {"token": 8e-4, "gap": 3e-4}


def get_config(arg=None):
    choice = common.parse_arg(arg, classifier="token", lr=0.0, model="ViT-B_16")
    common.check_choice("classifier", choice.classifier, tuple(LEARNING_RATES))
    lr = choice.lr or BEST_LR[choice.classifier]
    common.check_choice(f"lr (Fig. 9, {choice.classifier})", lr, LEARNING_RATES[choice.classifier])
    config = vit_pretrain.get_config(f"model={choice.model},dataset=jft,epochs=7")
    config.model.classifier = choice.classifier
    if choice.classifier == "gap":
        config.model.representation_size = None  # A linear classifier (App. D.3).
    config.lr = lr
    return config

"""Study 6 — transfer to a small target (Sec. 4.1-4.2): a ViT pre-trained on
Fashion-MNIST, fine-tuned on (or linearly probed with a few shots of)
scikit-learn's digits, against the same ViT trained on digits from scratch
and against few-shot probes of its untrained (random) features."""

import jax
import jax.numpy as jnp

from experiments.mini import report
from experiments.mini.models import vit
from experiments.mini.runs import (
    DIGITS,
    FASHION_MNIST,
    NUM_CLASSES,
    Trained,
    accuracy,
    fewshot_accuracy,
    finetune_config,
    pretrain_config,
    train,
)

TITLE = "Transfer to digits"
CLAIM = (
    "Pre-training on a larger data set and fine-tuning transfers: it beats training the "
    "small target from scratch, and few-shot linear probes of the representation work."
)
DEFAULT_SEEDS = (0, 1, 2)
MODEL = vit(64, 4, 4)
PRETRAIN_STEPS = 300
TARGET_STEPS = 150
SIZE = 28  # Digits (8 px) are resized to the pre-training resolution.


def pretrained_on_fashion(setting, model, seed: int, label: str, **options) -> Trained:
    config = pretrain_config(
        setting, model, dataset=FASHION_MNIST, seed=seed, steps=PRETRAIN_STEPS, image_size=SIZE
    )
    for field, value in options.items():
        setattr(config, field, value)
    return train(setting, config, label)


def finetuned_on_digits(setting, model, pretrained: Trained, seed: int, label: str) -> float:
    config = finetune_config(
        setting,
        model,
        pretrained=pretrained.npz,
        dataset=DIGITS,
        seed=seed,
        steps=TARGET_STEPS,
        image_size=SIZE,
        batch_size=64,
    )
    return accuracy(train(setting, config, label))


def scratch_on_digits(setting, model, seed: int) -> float:
    """The same model and number of steps, trained on digits alone (Adam recipe)."""
    config = pretrain_config(
        setting,
        model,
        dataset=DIGITS,
        seed=seed,
        steps=TARGET_STEPS,
        image_size=SIZE,
        batch_size=64,
    )
    return accuracy(train(setting, config, f"digits-scratch-s{seed}"))


def untrained(setting, model, seed: int) -> Trained:
    """The freshly initialised model, for a random-features few-shot baseline."""
    from vit_jax.models import get_model

    config = pretrain_config(setting, model, dataset=DIGITS, seed=seed, steps=1, image_size=SIZE)
    module = get_model(config.model_name, NUM_CLASSES, **config.model)
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, SIZE, SIZE, 1)))["params"]
    return Trained("untrained", config, "", jax.device_get(params), 0.0)


def run(setting) -> report.StudyResult:
    records = []
    for seed in setting.seeds:
        pretrained = pretrained_on_fashion(setting, MODEL, seed, f"transfer-fashion-s{seed}")
        random_features = untrained(setting, MODEL, seed)
        methods = {
            "fine-tuned from Fashion-MNIST": finetuned_on_digits(
                setting, MODEL, pretrained, seed, f"transfer-digits-s{seed}"
            ),
            "from scratch on digits": scratch_on_digits(setting, MODEL, seed),
            "5-shot probe, pre-trained": fewshot_accuracy(setting, pretrained, DIGITS, 5),
            "10-shot probe, pre-trained": fewshot_accuracy(setting, pretrained, DIGITS, 10),
            "5-shot probe, untrained": fewshot_accuracy(setting, random_features, DIGITS, 5),
            "10-shot probe, untrained": fewshot_accuracy(setting, random_features, DIGITS, 10),
        }
        records += [dict(method=m, seed=seed, digits_accuracy=a) for m, a in methods.items()]
    summary, table, plot = report.digits_accuracy_by_method(
        records, f"{setting.out_dir}/transfer.png", "method"
    )
    notes = (
        f"Pre-training: {PRETRAIN_STEPS} Adam steps on Fashion-MNIST; digits runs: "
        f"{TARGET_STEPS} steps at batch 64 on the 1,437 training digits, resized to {SIZE} px "
        "(fine-tuning: SGD lr 0.01; scratch: Adam lr 1e-3)."
    )
    return report.StudyResult(records, summary, table, [plot], notes)

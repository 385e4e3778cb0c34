"""Study 6 — transfer to a small target (Sec. 4.1-4.2): a ViT pre-trained on
Fashion-MNIST, fine-tuned on (or linearly probed with a few shots of)
scikit-learn's digits, against the same ViT trained on digits from scratch
and against few-shot probes of its untrained (random) features."""

import dataclasses

import jax
import jax.numpy as jnp

from experiments.mini import report
from experiments.mini.models import vit
from experiments.mini.runs import (
    DIGITS,
    FASHION_MNIST,
    NUM_CLASSES,
    PRETRAIN_STEPS,
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
TARGET_STEPS = 150
SIZE = 28  # Digits (8 px) are resized to the pre-training resolution.
# Learning rates swept on held-out training digits (Table 4's fine-tuning
# sweep; Adam's around the pre-training rate for the runs from scratch),
# extended until the chosen rate sits inside the grid (the first grids'
# largest rates had won).
FINETUNE_LRS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
SCRATCH_LRS = (3e-4, 1e-3, 3e-3, 1e-2)
SWEEP_TRAIN, SWEEP_HELD_OUT = "train[:80%]", "train[80%:]"


def pretrained_on_fashion(setting, model, seed: int, label: str, **options) -> Trained:
    config = pretrain_config(
        setting, model, dataset=FASHION_MNIST, seed=seed, steps=PRETRAIN_STEPS, image_size=SIZE
    )
    for field, value in options.items():
        setattr(config, field, value)
    return train(setting, config, label)


def digits_run(setting, model, seed: int, label: str, lr: float, pretrained=None, sweep=False):
    """Digits test accuracy of one run (held-out accuracy when `sweep`):
    fine-tuned from `pretrained` with Table 4's SGD recipe, or trained from
    scratch with the pre-training (Adam) recipe when it is None."""
    splits = dict(train_split=SWEEP_TRAIN, test_split=SWEEP_HELD_OUT) if sweep else {}
    common = dict(
        dataset=DIGITS,
        seed=seed,
        steps=TARGET_STEPS,
        image_size=SIZE,
        batch_size=64,
        lr=lr,
        **splits,
    )
    if pretrained is None:
        config = pretrain_config(setting, model, **common)
    else:
        config = finetune_config(setting, model, pretrained=pretrained.npz, **common)
    return accuracy(train(setting, config, f"{label}-lr{lr:g}" + ("-sweep" if sweep else "")))


def sweep_rates(setting, fine_tuning: bool, rates=None) -> tuple[float, ...]:
    """The learning rates a digits sweep runs: `rates`, else the method's grid
    (FINETUNE_LRS, or SCRATCH_LRS from scratch); planned_runs counts them too."""
    return setting.subset(rates or (FINETUNE_LRS if fine_tuning else SCRATCH_LRS))


def digits_lr_sweep(setting, model, label: str, pretrained: Trained | None, rates=None) -> dict:
    """Held-out digits accuracy by learning rate with the first seed:
    fine-tuning `pretrained`, or from scratch when it is None (sweep_rates)."""
    rates = sweep_rates(setting, pretrained is not None, rates)
    seed = setting.seeds[0]
    return {lr: digits_run(setting, model, seed, label, lr, pretrained, sweep=True) for lr in rates}


def tuned_on_digits(setting, model, label: str, pretrained: dict | None = None):
    """The learning rate chosen on held-out training digits with the first
    seed, the test accuracy per seed of runs on all training digits with it,
    and the sweep's held-out accuracy per rate. `pretrained` maps seed →
    Trained (fine-tuning); None: from scratch."""
    source = pretrained or {}  # .get(seed) is None: from scratch.
    held_out = digits_lr_sweep(setting, model, label, source.get(setting.seeds[0]))
    best = max(held_out, key=held_out.get)
    by_seed = {s: digits_run(setting, model, s, label, best, source.get(s)) for s in setting.seeds}
    return Tuned(best, by_seed, held_out)


def tuning_runs(setting, fine_tuning: bool) -> int:
    """The training runs of one tuned_on_digits: its sweep, then each seed."""
    return len(sweep_rates(setting, fine_tuning)) + len(setting.seeds)


def untrained(setting, model, seed: int) -> Trained:
    """The freshly initialised model, for a random-features few-shot baseline."""
    from vit_jax.models import get_model

    config = pretrain_config(setting, model, dataset=DIGITS, seed=seed, steps=1, image_size=SIZE)
    module = get_model(config.model_name, NUM_CLASSES, **config.model)
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, SIZE, SIZE, 1)))["params"]
    return Trained("untrained", config, "", jax.device_get(params), 0.0)


@dataclasses.dataclass
class Tuned:
    """A digits method after its learning-rate sweep."""

    lr: float  # Chosen on held-out training digits.
    test_by_seed: dict[int, float]
    held_out_by_lr: dict[float, float]

    def records(self, method: str) -> list[dict]:
        return [
            dict(method=f"{method} (lr {self.lr:g})", seed=seed, digits_accuracy=acc)
            for seed, acc in self.test_by_seed.items()
        ]


def sweep_notes(held_out: dict[str, dict[float, float]]) -> str:
    """The sweeps' held-out accuracies (name → rate → accuracy), so that a
    reader sees the chosen rate is not at the edge of its grid."""
    sweeps = "; ".join(
        f"{name}: " + ", ".join(f"{lr:g} → {100 * acc:.1f}" for lr, acc in by_lr.items())
        for name, by_lr in held_out.items()
    )
    return f" Held-out accuracy (%) by learning rate, first seed — {sweeps}."


def planned_runs(setting) -> int:
    """The pre-trainings, then fine-tuning and scratch, each tuned."""
    return len(setting.seeds) + tuning_runs(setting, True) + tuning_runs(setting, False)


def tuned_notes(tuned: dict[str, Tuned]) -> str:
    """sweep_notes of tuned_on_digits' results, by method."""
    return sweep_notes({method: t.held_out_by_lr for method, t in tuned.items()})


def run(setting) -> report.StudyResult:
    pretrained = {
        seed: pretrained_on_fashion(setting, MODEL, seed, f"transfer-fashion-s{seed}")
        for seed in setting.seeds
    }
    tuned = {
        "fine-tuned from Fashion-MNIST": tuned_on_digits(
            setting, MODEL, "transfer-digits", pretrained
        ),
        "from scratch on digits": tuned_on_digits(setting, MODEL, "digits-scratch"),
    }
    records = [record for method, t in tuned.items() for record in t.records(method)]
    for seed in setting.seeds:
        features = {"pre-trained": pretrained[seed], "untrained": untrained(setting, MODEL, seed)}
        records += [
            dict(
                method=f"{shots}-shot probe, {name}",
                seed=seed,
                digits_accuracy=fewshot_accuracy(setting, trained, DIGITS, shots),
            )
            for name, trained in features.items()
            for shots in (5, 10)
        ]
    summary, table, plot = report.digits_accuracy_by_method(
        records, f"{setting.out_dir}/transfer.png", "method"
    )
    notes = (
        f"Pre-training: {PRETRAIN_STEPS} Adam steps at batch 128 on Fashion-MNIST; digits "
        f"runs: {TARGET_STEPS} steps at batch 64 on the 1,437 training digits, resized to "
        f"{SIZE} px. Fine-tuning: SGD, lr chosen from {list(FINETUNE_LRS)}; scratch: Adam, "
        f"lr chosen from {list(SCRATCH_LRS)}; each chosen with seed {setting.seeds[0]} on "
        f"{SWEEP_TRAIN} → {SWEEP_HELD_OUT} of the training digits, then run with every seed "
        "on all of them. Probes: ridge on frozen pre-logits, mean of 3 draws."
    ) + tuned_notes(tuned)
    return report.StudyResult(records, summary, table, [plot], notes)

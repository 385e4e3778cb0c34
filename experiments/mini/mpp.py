"""Study 7 — masked patch prediction (Sec. 4.6): self-supervised pre-training
on Fashion-MNIST (config.objective='masked_patch_prediction', vit_jax.models.mpp)
then fine-tuning on digits, against training on digits from scratch and
against supervised pre-training on Fashion-MNIST."""

from experiments.mini import report
from experiments.mini.models import vit
from experiments.mini.runs import PRETRAIN_STEPS
from experiments.mini.transfer import (
    pretrained_on_fashion,
    tuned_notes,
    tuned_on_digits,
    tuning_runs,
)

TITLE = "Masked patch prediction (Sec. 4.6)"
CLAIM = (
    "Self-supervised masked patch prediction beats training from scratch (+2% ImageNet) "
    "but stays below supervised pre-training (−4%)."
)
DEFAULT_SEEDS = (0, 1, 2)
MODEL = vit(64, 4, 4)  # transfer.MODEL: its runs are shared.
OBJECTIVE = "masked_patch_prediction"


def planned_runs(setting) -> int:
    """Two pre-trainings, then scratch and the two fine-tunings, each tuned."""
    return 2 * len(setting.seeds) + tuning_runs(setting, False) + 2 * tuning_runs(setting, True)


def run(setting) -> report.StudyResult:
    pretrainings = {
        "masked patch prediction": {
            seed: pretrained_on_fashion(
                setting, MODEL, seed, f"mpp-fashion-s{seed}", objective=OBJECTIVE
            )
            for seed in setting.seeds
        },
        "supervised pre-training": {
            seed: pretrained_on_fashion(setting, MODEL, seed, f"transfer-fashion-s{seed}")
            for seed in setting.seeds
        },
    }
    labels = {"masked patch prediction": "mpp-digits", "supervised pre-training": "transfer-digits"}
    tuned = {"from scratch": tuned_on_digits(setting, MODEL, "digits-scratch")}
    for name, by_seed in pretrainings.items():
        tuned[f"{name}, fine-tuned"] = tuned_on_digits(setting, MODEL, labels[name], by_seed)
    records = [record for method, t in tuned.items() for record in t.records(method)]
    summary, table, plot = report.digits_accuracy_by_method(
        records, f"{setting.out_dir}/mpp.png", "pre-training"
    )
    notes = (
        f"Both pre-trainings: the same ViT, {PRETRAIN_STEPS} steps and Adam recipe on "
        "Fashion-MNIST (the self-supervised one ignores the labels; 1-channel images give "
        "8 colour classes); fine-tuning and scratch runs, with their learning-rate "
        "sweeps on held-out training digits, as in the transfer study."
    ) + tuned_notes(tuned)
    return report.StudyResult(records, summary, table, [plot], notes)

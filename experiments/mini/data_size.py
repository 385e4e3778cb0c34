"""Study 1 — pre-training data size (Sec. 4.2-4.3, Fig. 3 and 4).

ViT, BiT ResNet and hybrid pre-trained on the first 1k, 3k, 10k, 30k or all
60k Fashion-MNIST training images, each for the same number of steps (as the
paper's JFT subsets: same compute, only the data differs), then scored by
5-shot linear probes (Fig. 4) and by fine-tuning on digits (Fig. 3).
"""

from experiments.mini import report
from experiments.mini.models import bit, hybrid, vit
from experiments.mini.runs import (
    FASHION_MNIST,
    PRETRAIN_STEPS,
    pretrain_config,
    score_pretrained,
    train,
)
from experiments.mini.transfer import (
    FINETUNE_LRS,
    SWEEP_HELD_OUT,
    SWEEP_TRAIN,
    TARGET_STEPS,
    digits_lr_sweep,
    digits_run,
    sweep_notes,
    sweep_rates,
)

TITLE = "Pre-training data size (Fig. 3/4)"
CLAIM = (
    "With little pre-training data ViT underperforms BiT ResNets; with more data it "
    "overtakes them, and hybrids sit in between at small sizes."
)
DEFAULT_SEEDS = (0, 1, 2)  # Each run costs 1-4 minutes.
MODELS = (vit(64, 4, 4), bit((1, 1, 1), 0.5), hybrid((1,), 64, 4))
SIZES = (1_000, 3_000, 10_000, 30_000, 60_000)
FULL_SIZE = 60_000  # All of Fashion-MNIST's training split.
TOY_SIZES = (60,)  # The smoke test writes 60 training images.
STEPS = PRETRAIN_STEPS
# The transfer study's fine-tuning grid, extended: the BiT ResNet chose its
# largest rate, 0.3, so the grid goes on until the choice sits inside it.
FINETUNE_GRID = (*FINETUNE_LRS, 1.0)
METRICS = {
    "digits_finetuned": "digits fine-tuned",
    "digits_5shot": "5-shot digits",
    "fashion_5shot": "5-shot Fashion-MNIST",
    "test_accuracy": "Fashion-MNIST test",
}


def pretrained_on_subset(setting, model, size: int, seed: int):
    config = pretrain_config(
        setting,
        model,
        dataset=FASHION_MNIST,
        # The whole split is named "train", as in the other studies, so that
        # the compute and transfer studies' pre-trainings are shared.
        train_split="train" if size == FULL_SIZE else f"train[:{size}]",
        seed=seed,
        steps=STEPS,
        image_size=28,
    )
    return train(setting, config, f"datasize-{model.label}-n{size}-s{seed}")


def planned_runs(setting) -> int:
    """Per model: the pre-trainings, the fine-tuning sweep, a fine-tuning of each."""
    pretrainings = len(setting.pick(SIZES, TOY_SIZES)) * len(setting.seeds)
    sweep = len(sweep_rates(setting, True, FINETUNE_GRID))
    return len(setting.subset(MODELS)) * (2 * pretrainings + sweep)


def run(setting) -> report.StudyResult:
    records, sweeps = [], {}
    sizes = setting.pick(SIZES, TOY_SIZES)
    for model in setting.subset(MODELS):
        pretrained = {
            (size, seed): pretrained_on_subset(setting, model, size, seed)
            for size in sizes
            for seed in setting.seeds
        }
        # Fine-tuning's rate is swept once per model, on the largest
        # pre-training (as the transfer study does for its ViT), and used at
        # every size: a sweep per size would cost five times as many runs.
        label = f"datasize-{model.label}-digits"
        largest = pretrained[sizes[-1], setting.seeds[0]]
        held_out = digits_lr_sweep(setting, model, label, largest, FINETUNE_GRID)
        lr = max(held_out, key=held_out.get)
        sweeps[model.label] = held_out
        for (size, seed), trained in pretrained.items():
            records.append(
                dict(
                    model=model.label,
                    images=size,
                    seed=seed,
                    **score_pretrained(setting, trained),
                    digits_finetuned=digits_run(setting, model, seed, label, lr, trained),
                    finetune_lr=lr,
                )
            )
    summary = report.summarise(records, ("model", "images"), tuple(METRICS))
    table = report.markdown_table(
        summary, {"model": "model", "images": "pre-training images", **METRICS}, percent=METRICS
    )
    plots = report.metric_line_plots(
        f"{setting.out_dir}/data_size",
        summary,
        METRICS,
        x="images",
        series="model",
        xlabel="Fashion-MNIST pre-training images",
    )
    notes = (
        f"Every model: {STEPS} Adam steps at batch 128 on the subset, whatever its size; "
        f"fine-tuning: {TARGET_STEPS} SGD steps at batch 64 on digits resized to 28 px, "
        f"at the rate chosen per model from {list(FINETUNE_GRID)} on {SWEEP_TRAIN} → "
        f"{SWEEP_HELD_OUT} of the training digits, fine-tuning its {FULL_SIZE // 1000}k "
        "pre-training (first seed), then used at every size. "
        "No regularisation sweep per size (the paper tunes weight decay, dropout and label "
        "smoothing on the small sets): weight decay 0.1 and flips everywhere."
    )
    return report.StudyResult(records, summary, table, plots, notes + sweep_notes(sweeps))

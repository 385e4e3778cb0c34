"""Study 1 — pre-training data size (Sec. 4.2-4.3, Fig. 3 and 4).

ViT, BiT ResNet and hybrid pre-trained on the first 1k, 3k, 10k, 30k or all
60k Fashion-MNIST training images, each for the same number of steps (as the
paper's JFT subsets: same compute, only the data differs), then scored by
5-shot linear probes (Fig. 4) and by fine-tuning on digits (Fig. 3).
"""

from experiments.mini import report
from experiments.mini.models import bit, hybrid, vit
from experiments.mini.runs import (
    DIGITS,
    FASHION_MNIST,
    PRETRAIN_STEPS,
    accuracy,
    finetune_config,
    pretrain_config,
    score_pretrained,
    train,
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
FINETUNE_STEPS = 100
METRICS = {
    "digits_finetuned": "digits fine-tuned",
    "digits_5shot": "5-shot digits",
    "fashion_5shot": "5-shot Fashion-MNIST",
    "test_accuracy": "Fashion-MNIST test",
}


def run(setting) -> report.StudyResult:
    records = []
    for model in setting.subset(MODELS):
        for size in setting.pick(SIZES, TOY_SIZES):
            for seed in setting.seeds:
                config = pretrain_config(
                    setting,
                    model,
                    dataset=FASHION_MNIST,
                    # The whole split is named "train", as in the other studies,
                    # so that the compute study's pre-trainings are shared.
                    train_split="train" if size == FULL_SIZE else f"train[:{size}]",
                    seed=seed,
                    steps=STEPS,
                    image_size=28,
                )
                trained = train(setting, config, f"datasize-{model.label}-n{size}-s{seed}")
                finetune = finetune_config(
                    setting,
                    model,
                    pretrained=trained.npz,
                    dataset=DIGITS,
                    seed=seed,
                    steps=FINETUNE_STEPS,
                    image_size=28,
                    batch_size=64,
                )
                tuned = train(setting, finetune, f"datasize-{model.label}-n{size}-s{seed}-digits")
                records.append(
                    dict(
                        model=model.label,
                        images=size,
                        seed=seed,
                        **score_pretrained(setting, trained),
                        digits_finetuned=accuracy(tuned),
                    )
                )
    summary = report.summarise(records, ("model", "images"), tuple(METRICS))
    table = report.markdown_table(
        summary, {"model": "model", "images": "pre-training images", **METRICS}, percent=METRICS
    )
    plots = [
        report.line_plot(
            f"{setting.out_dir}/data_size_{metric}.png",
            summary,
            x="images",
            y=metric,
            series="model",
            xlabel="Fashion-MNIST pre-training images",
            ylabel=f"{legend} accuracy (%)",
        )
        for metric, legend in METRICS.items()
    ]
    notes = (
        f"Every model: {STEPS} Adam steps at batch 128 on the subset, whatever its size; "
        f"fine-tuning: {FINETUNE_STEPS} SGD steps at batch 64 on digits resized to 28 px. "
        "No regularisation sweep per size (the paper tunes weight decay, dropout and label "
        "smoothing on the small sets): weight decay 0.1 and flips everywhere."
    )
    return report.StudyResult(records, summary, table, plots, notes)

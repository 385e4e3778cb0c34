"""Study 5 — fine-tuning at a higher resolution (Sec. 3.2).

Sec. 3.2: "it is often beneficial to fine-tune at higher resolution than
pre-training". A ViT is pre-trained on Fashion-MNIST downsampled to 16 px
(4×4 patches of 4 px) and fine-tuned at the images' native 28 px (7×7
patches) with its position embeddings 2-D interpolated (what load_pretrained
does), or with them re-initialised, or fine-tuned at its own 16 px. The
fine-tuning rate is swept for every variant and chosen on held-out training
images, so no variant is judged at a rate that suits another.
"""

import os

import numpy as np

from experiments.mini import report
from experiments.mini.models import vit
from experiments.mini.runs import (
    FASHION_MNIST,
    PRETRAIN_STEPS,
    accuracy,
    finetune_config,
    pretrain_config,
    train,
)
from vit_jax import checkpoint

TITLE = "Higher-resolution fine-tuning (Sec. 3.2)"
CLAIM = (
    "Fine-tuning at a higher resolution than pre-training helps, with the pre-trained "
    "position embeddings 2-D interpolated to the longer sequence."
)
DEFAULT_SEEDS = (0, 1, 2)
MODEL = vit(64, 4, 4)
STEPS = PRETRAIN_STEPS
PRETRAIN_SIZE = 16  # Fashion-MNIST downsampled from its native 28 px.
FINETUNE_STEPS = 100
# 0.1 added after both 28 px variants chose 0.03, the first grid's largest.
FINETUNE_LRS = (0.003, 0.01, 0.03, 0.1)
VARIANTS = {  # name → (resolution, position embeddings)
    "16 px (pre-training resolution)": (16, "pre-trained"),
    "28 px, interpolated": (28, "pre-trained"),
    "28 px, re-initialised": (28, "fresh"),
}
# Held out from pre-training and fine-tuning alike: it chooses the rate.
TRAIN, HELD_OUT = "train[:54000]", "train[54000:]"
TOY_TRAIN, TOY_HELD_OUT = "train[:80%]", "train[80%:]"


def with_fresh_posemb(npz: str, path: str, grid: tuple[int, int], seed: int) -> str:
    """A copy of the checkpoint whose 1-D position table is drawn anew (the
    model's init: normal, std 0.02) for `grid`, so nothing is interpolated."""
    params = checkpoint.load_npz(npz)
    posemb = params["Transformer"]["posembed_input"]
    width = posemb["pos_embedding"].shape[-1]
    rng = np.random.default_rng(seed)
    posemb["pos_embedding"] = 0.02 * rng.standard_normal((1, 1 + grid[0] * grid[1], width))
    checkpoint.save_npz(path, params)
    return path


def planned_runs(setting) -> int:
    """Per seed: the pre-training and each fine-tuning variant at every rate."""
    return len(setting.seeds) * (1 + len(VARIANTS) * len(setting.subset(FINETUNE_LRS)))


def run(setting) -> report.StudyResult:
    records = []
    patch = setting.model(MODEL).overrides["patch_size"][0]
    splits = dict(
        train_split=setting.pick(TRAIN, TOY_TRAIN), test_split=setting.pick(HELD_OUT, TOY_HELD_OUT)
    )
    for seed in setting.seeds:
        config = pretrain_config(
            setting,
            MODEL,
            dataset=FASHION_MNIST,
            seed=seed,
            steps=STEPS,
            image_size=PRETRAIN_SIZE,
            **splits,
        )
        pretrained = train(setting, config, f"resolution-pretrain{PRETRAIN_SIZE}-s{seed}")
        pretrained_accuracy = accuracy(pretrained, "test")  # At 16 px, before fine-tuning.
        for name, (size, posemb) in VARIANTS.items():
            npz = pretrained.npz
            if posemb == "fresh":
                grid = (size // patch, size // patch)
                npz = with_fresh_posemb(
                    npz, os.path.join(pretrained.workdir, f"fresh_posemb_{size}.npz"), grid, seed
                )
            for lr in setting.subset(FINETUNE_LRS):
                finetune = finetune_config(
                    setting,
                    MODEL,
                    pretrained=npz,
                    lr=lr,
                    dataset=FASHION_MNIST,
                    seed=seed,
                    steps=FINETUNE_STEPS,
                    image_size=size,
                    batch_size=64,
                    **splits,
                )
                tuned = train(setting, finetune, f"resolution-{size}-{posemb}-lr{lr:g}-s{seed}")
                records.append(
                    dict(
                        variant=name,
                        lr=lr,
                        seed=seed,
                        pretrained_accuracy=pretrained_accuracy,
                        held_out_accuracy=accuracy(tuned),
                        test_accuracy=accuracy(tuned, "test"),
                    )
                )
    metrics = {
        "pretrained_accuracy": f"before fine-tuning ({PRETRAIN_SIZE} px)",
        "held_out_accuracy": "fine-tuned, held-out",
        "test_accuracy": "fine-tuned, test",
    }
    grid = report.summarise(records, ("variant", "lr"), tuple(metrics))
    chosen = {}  # variant → the rate with the best mean held-out accuracy
    for row in grid:
        best = chosen.get(row["variant"])
        if best is None or row["held_out_accuracy"]["mean"] > best["held_out_accuracy"]["mean"]:
            chosen[row["variant"]] = row
    summary = list(chosen.values())
    columns = {"variant": "fine-tuning", "lr": "chosen SGD lr", **metrics}
    table = report.markdown_table(summary, columns, percent=metrics)
    table += "\n\nEvery rate:\n\n" + report.markdown_table(
        grid, {**columns, "lr": "SGD lr"}, percent=metrics
    )
    plot = report.bar_plot(
        f"{setting.out_dir}/resolution.png",
        summary,
        category="variant",
        metrics={k: v for k, v in metrics.items() if k != "held_out_accuracy"},
        ylabel="Fashion-MNIST test accuracy (%)",
    )
    notes = (
        f"Pre-training: {setting.steps(STEPS)} Adam steps at batch 128 on "
        f"{splits['train_split']} resized to {PRETRAIN_SIZE} px; fine-tuning: "
        f"{setting.steps(FINETUNE_STEPS)} SGD steps at batch 64 on the same images at 16 px "
        "or at their native 28 px, at each rate of "
        f"{list(setting.subset(FINETUNE_LRS))}; the rate is chosen per variant on the mean "
        f"held-out accuracy ({splits['test_split']}, never trained on), and the table gives "
        "that rate's test accuracy (10k test images)."
    )
    return report.StudyResult(records, summary, table, [plot], notes)

"""Study 5 — fine-tuning at a higher resolution (Sec. 3.2).

A ViT pre-trained at 28 px (7×7 patches of 4 px) is fine-tuned on
Fashion-MNIST at 56 px (14×14 patches) with its position embeddings 2-D
interpolated (what load_pretrained does), or with them re-initialised, or
fine-tuned at its own 28 px.
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
FINETUNE_STEPS = 100
VARIANTS = {  # name → (resolution, position embeddings)
    "28 px (no change)": (28, "pre-trained"),
    "56 px, interpolated": (56, "pre-trained"),
    "56 px, re-initialised": (56, "fresh"),
}


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
    """Per seed: the pre-training and each fine-tuning variant."""
    return len(setting.seeds) * (1 + len(VARIANTS))


def run(setting) -> report.StudyResult:
    records = []
    patch = setting.model(MODEL).overrides["patch_size"][0]
    for seed in setting.seeds:
        config = pretrain_config(
            setting, MODEL, dataset=FASHION_MNIST, seed=seed, steps=STEPS, image_size=28
        )
        pretrained = train(setting, config, f"resolution-pretrain-s{seed}")
        pretrained_accuracy = accuracy(pretrained)  # Once per pre-training, not per variant.
        for name, (size, posemb) in VARIANTS.items():
            npz = pretrained.npz
            if posemb == "fresh":
                grid = (size // patch, size // patch)
                npz = with_fresh_posemb(
                    npz, os.path.join(pretrained.workdir, f"fresh_posemb_{size}.npz"), grid, seed
                )
            finetune = finetune_config(
                setting,
                MODEL,
                pretrained=npz,
                dataset=FASHION_MNIST,
                seed=seed,
                steps=FINETUNE_STEPS,
                image_size=size,
                batch_size=64,
            )
            tuned = train(setting, finetune, f"resolution-{size}-{posemb}-s{seed}")
            records.append(
                dict(
                    variant=name,
                    seed=seed,
                    pretrained_accuracy=pretrained_accuracy,
                    test_accuracy=accuracy(tuned),
                )
            )
    metrics = {"pretrained_accuracy": "before fine-tuning (28 px)", "test_accuracy": "fine-tuned"}
    summary = report.summarise(records, ("variant",), tuple(metrics))
    table = report.markdown_table(summary, {"variant": "fine-tuning", **metrics}, percent=metrics)
    plot = report.bar_plot(
        f"{setting.out_dir}/resolution.png",
        summary,
        category="variant",
        metrics=metrics,
        ylabel="Fashion-MNIST test accuracy (%)",
    )
    notes = (
        f"Pre-training: {STEPS} Adam steps at 28 px; fine-tuning: {FINETUNE_STEPS} SGD steps "
        "at batch 64 on the same 60k images, images resized bilinearly to 56 px."
    )
    return report.StudyResult(records, summary, table, [plot], notes)

"""Study 3 — position embeddings (App. D.4, Table 8).

The same ViT pre-trained on Fashion-MNIST with no, 1-D, 2-D or relative
position embeddings (vit_jax.models.posemb; "relative" is App. D.4's
relative attention); compared by 5-shot linear accuracy as in Table 8, and
by test accuracy. The committed results/posemb.json predates App. D.4's
form: its "relative" rows are today's posemb="relative_bias".
"""

from experiments.mini import report
from experiments.mini.models import vit
from experiments.mini.runs import (
    FASHION_MNIST,
    PRETRAIN_STEPS,
    pretrain_config,
    score_pretrained,
    train,
)

TITLE = "Position embeddings (Table 8)"
CLAIM = (
    "Any position embedding beats none; 1-D, 2-D and relative ones are about equal "
    "(ViT-B/16, 5-shot ImageNet: none 61.4, 1-D 64.2, 2-D 64.0, relative 64.0)."
)
DEFAULT_SEEDS = (0, 1, 2)
KINDS = ("none", "learn_1d", "learn_2d", "relative")
MODEL = vit(64, 4, 4)  # 7×7 patches of 4×4 pixels: a grid with room for 2-D structure.
STEPS = PRETRAIN_STEPS
METRICS = {
    "fashion_5shot": "5-shot Fashion-MNIST",
    "digits_5shot": "5-shot digits",
    "test_accuracy": "Fashion-MNIST test",
}


def planned_runs(setting) -> int:
    return len(setting.subset(KINDS)) * len(setting.seeds)


def run(setting) -> report.StudyResult:
    records = []
    for kind in setting.subset(KINDS):
        for seed in setting.seeds:
            config = pretrain_config(
                setting,
                MODEL.with_options(posemb=kind),
                dataset=FASHION_MNIST,
                seed=seed,
                steps=STEPS,
                image_size=28,
            )
            trained = train(setting, config, f"posemb-{kind}-s{seed}")
            scores = score_pretrained(setting, trained)
            records.append(dict(posemb=kind, seed=seed, **scores, train_seconds=trained.seconds))
    summary = report.summarise(records, ("posemb",), tuple(METRICS))
    table = report.markdown_table(
        summary, {"posemb": "position embedding", **METRICS}, percent=METRICS
    )
    plot = report.bar_plot(
        f"{setting.out_dir}/posemb.png",
        summary,
        category="posemb",
        metrics=METRICS,
        ylabel="accuracy (%)",
    )
    notes = (
        f"{setting.model(MODEL).label}-style ViT ({STEPS} steps at batch 128 on the 60k "
        "Fashion-MNIST training images, Adam); few-shot: ridge probe on frozen "
        "pre-logits, 5 images per class, mean over 3 draws; mean ± std over seeds."
    )
    return report.StudyResult(records, summary, table, [plot], notes)

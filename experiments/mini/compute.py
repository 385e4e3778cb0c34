"""Study 2 — accuracy against pre-training compute (Fig. 5, App. Table 6).

Four sizes per family, all pre-trained for the same steps on the 60k
Fashion-MNIST images; compute is the paper's convention, 3 × forward FLOPs ×
images seen, with the forward FLOPs measured by XLA on the model itself
(vit_jax.models.costs).
"""

from experiments.mini import report
from experiments.mini.models import FAMILIES, bit, hybrid, vit
from experiments.mini.runs import (
    FASHION_MNIST,
    NUM_CLASSES,
    PRETRAIN_STEPS,
    images_seen,
    pretrain_config,
    score_pretrained,
    train,
)

TITLE = "Pre-training compute (Fig. 5)"
CLAIM = (
    "At equal pre-training compute ViT beats BiT ResNets (2-4× less compute for the same "
    "accuracy); hybrids beat ViT at small compute, the gap closing for larger models."
)
DEFAULT_SEEDS = (0, 1, 2)  # 91 min on the 2-core VM; --seeds=0 for the 40-minute run.
MODELS = (
    vit(64, 2, 4),
    vit(64, 4, 4),
    vit(96, 4, 4),
    vit(128, 4, 4),
    bit((1, 1), 0.5),
    bit((1, 1, 1), 0.5),
    bit((2, 2, 2), 0.5),
    bit((2, 2, 2), 1.0),
    hybrid((1,), 64, 2),
    hybrid((1,), 64, 4),
    hybrid((1,), 96, 4),
    hybrid((1,), 128, 4),
)
STEPS = PRETRAIN_STEPS
METRICS = {
    "digits_5shot": "5-shot digits",
    "fashion_5shot": "5-shot Fashion-MNIST",
    "test_accuracy": "Fashion-MNIST test",
}


def pretraining_config(setting, model, seed: int):
    """The one pre-training every model gets (the analysis study reuses it)."""
    return pretrain_config(
        setting, model, dataset=FASHION_MNIST, seed=seed, steps=STEPS, image_size=28
    )


def pretraining_petaflops(config) -> float:
    """3 × measured forward FLOPs per image × images seen, in PFLOPs."""
    from vit_jax.models import costs, get_model

    model = get_model(config.model_name, NUM_CLASSES, **config.model)
    flops = costs.forward_flops(model, config.image_size, channels=1)
    return 1e3 * costs.pretraining_exaflops(flops, images_seen(config))


def models(setting):
    """All sizes; at toy size the smallest of each family."""
    smallest_of_each = tuple(next(m for m in MODELS if m.family == f) for f in FAMILIES)
    return setting.pick(MODELS, smallest_of_each)


def planned_runs(setting) -> int:
    return len(models(setting)) * len(setting.seeds)


def run(setting) -> report.StudyResult:
    records = []
    for model in models(setting):
        for seed in setting.seeds:
            config = pretraining_config(setting, model, seed)
            trained = train(setting, config, f"compute-{model.label}-s{seed}")
            records.append(
                dict(
                    family=model.family,
                    model=model.label,
                    seed=seed,
                    petaflops=pretraining_petaflops(config),
                    **score_pretrained(setting, trained),
                    train_seconds=trained.seconds,
                )
            )
    summary = report.summarise(records, ("family", "model", "petaflops"), tuple(METRICS))
    table = report.markdown_table(
        summary,
        {"family": "family", "model": "model", "petaflops": "pre-training PFLOPs", **METRICS},
        percent=METRICS,
    )
    plots = report.metric_line_plots(
        f"{setting.out_dir}/compute",
        summary,
        METRICS,
        x="petaflops",
        series="family",
        xlabel="pre-training compute (PFLOPs, measured forward × 3 × images)",
    )
    notes = f"{STEPS} Adam steps at batch 128 for every model; FLOPs from XLA's cost analysis."
    return report.StudyResult(records, summary, table, plots, notes)

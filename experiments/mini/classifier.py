"""Study 4 — class token vs. global average pooling (App. D.3, Fig. 9).

Both classifiers run the whole learning-rate grid with every seed; rates are
judged on a held-out slice of the training set (train[54000:], as the paper
selects hyper-parameters on held-out data) and the test set is only reported.
Fig. 9's claim has a direction (GAP wants a lower rate than the token), so
besides each classifier's best rate the study reports, per rate, the paired
GAP − token difference over seeds: a shift of GAP's optimum to lower rates
shows as a positive difference at the low rates and a negative one at the high.
"""

import math

import numpy as np

from experiments.mini import report
from experiments.mini.models import vit
from experiments.mini.runs import FASHION_MNIST, PRETRAIN_STEPS, accuracy, pretrain_config, train

TITLE = "Class token vs. GAP (App. D.3)"
CLAIM = (
    "Class token and GAP reach the same accuracy, but GAP needs a different (lower) "
    "learning rate (Fig. 9)."
)
DEFAULT_SEEDS = (0, 1, 2)
CLASSIFIERS = ("token", "gap")
LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2)
MODEL = vit(64, 4, 4)
STEPS = PRETRAIN_STEPS
TRAIN, HELD_OUT = "train[:54000]", "train[54000:]"
TOY_TRAIN, TOY_HELD_OUT = "train[:80%]", "train[80%:]"


def _train(setting, classifier: str, lr: float, seed: int):
    config = pretrain_config(
        setting,
        MODEL.with_options(classifier=classifier),
        lr=lr,
        dataset=FASHION_MNIST,
        train_split=setting.pick(TRAIN, TOY_TRAIN),
        test_split=setting.pick(HELD_OUT, TOY_HELD_OUT),
        seed=seed,
        steps=STEPS,
        image_size=28,
    )
    trained = train(setting, config, f"classifier-{classifier}-lr{lr:g}-s{seed}")
    return dict(
        classifier=classifier,
        lr=lr,
        seed=seed,
        held_out_accuracy=accuracy(trained),
        test_accuracy=accuracy(trained, "test"),
    )


def planned_runs(setting) -> int:
    return len(CLASSIFIERS) * len(setting.subset(LEARNING_RATES)) * len(setting.seeds)


def best_rates(records, seeds) -> dict:
    """classifier → the rate with the best held-out accuracy, per seed and for
    the mean over seeds ('mean')."""
    best = {}
    for classifier in CLASSIFIERS:
        mine = [r for r in records if r["classifier"] == classifier]
        per_seed = {
            seed: max((r for r in mine if r["seed"] == seed), key=lambda r: r["held_out_accuracy"])[
                "lr"
            ]
            for seed in seeds
        }
        rates = sorted({r["lr"] for r in mine})
        means = {
            lr: np.mean([r["held_out_accuracy"] for r in mine if r["lr"] == lr]) for lr in rates
        }
        best[classifier] = {**per_seed, "mean": max(means, key=means.get)}
    return best


def paired_differences(records) -> list[dict]:
    """Per rate: GAP − token held-out accuracy, paired by seed (mean ± std)."""
    rows = []
    for lr in sorted({r["lr"] for r in records}):
        by_seed = {
            (r["classifier"], r["seed"]): r["held_out_accuracy"] for r in records if r["lr"] == lr
        }
        seeds = sorted({seed for _, seed in by_seed})
        diffs = [by_seed["gap", s] - by_seed["token", s] for s in seeds if ("gap", s) in by_seed]
        rows.append(
            dict(
                lr=lr,
                gap_minus_token={
                    "mean": float(np.mean(diffs)),
                    "std": float(np.std(diffs)),
                    "n": len(diffs),
                },
                gap_ahead=f"{sum(d > 0 for d in diffs)} of {len(diffs)}",
            )
        )
    return rows


def run(setting) -> report.StudyResult:
    rates = setting.subset(LEARNING_RATES)
    records = [
        _train(setting, c, lr, seed) for c in CLASSIFIERS for lr in rates for seed in setting.seeds
    ]
    best = best_rates(records, setting.seeds)
    metrics = ("held_out_accuracy", "test_accuracy")
    summary = report.summarise(records, ("classifier", "lr"), metrics)
    for row in summary:
        row["chosen"] = "yes" if best[row["classifier"]]["mean"] == row["lr"] else ""
    table = report.markdown_table(
        summary,
        {
            "classifier": "classifier",
            "lr": "Adam lr",
            "chosen": "best on held-out (mean)",
            "held_out_accuracy": "held-out accuracy",
            "test_accuracy": "test accuracy",
        },
        percent=metrics,
    )
    differences = paired_differences(records)
    table += "\n\n" + report.markdown_table(
        differences,
        {
            "lr": "Adam lr",
            "gap_minus_token": "GAP − token, held-out (points)",
            "gap_ahead": "seeds with GAP ahead",
        },
        percent=("gap_minus_token",),
    )
    plot = report.line_plot(
        f"{setting.out_dir}/classifier.png",
        summary,
        x="lr",
        y="held_out_accuracy",
        series="classifier",
        xlabel="peak learning rate (Adam)",
        ylabel="held-out accuracy (%)",
    )
    per_seed = "; ".join(
        f"{c}: " + ", ".join(f"seed {s} → {best[c][s]:g}" for s in setting.seeds)
        for c in CLASSIFIERS
    )
    shift = math.log10(best["gap"]["mean"] / best["token"]["mean"])
    notes = (
        f"Every rate of {list(rates)} with seeds {list(setting.seeds)}, {setting.steps(STEPS)} "
        f"Adam steps at batch 128 on {setting.pick(TRAIN, TOY_TRAIN)}; accuracies on "
        f"{setting.pick(HELD_OUT, TOY_HELD_OUT)} (held out) and on the test set. "
        f"Best held-out rate per seed: {per_seed}. "
        f"On the mean over seeds GAP's best rate is {best['gap']['mean']:g} and the token's "
        f"{best['token']['mean']:g} ({shift:+.1f} decades). The second table pairs the two "
        "classifiers seed by seed at each rate."
    )
    return report.StudyResult(records, summary, table, [plot], notes)

"""Study 4 — class token vs. global average pooling (App. D.3, Fig. 9).

The baseline ViT (configs/fashion_mnist.py's model and recipe) with either
classifier runs the whole learning-rate grid with every seed, pre-trained on
Fashion-MNIST's classes 0-4 for half the baseline's length; rates are judged
on a held-out slice of the training set (train[27000:], as the paper
selects hyper-parameters on held-out data) and the test set is only reported.
Fig. 9's claim has a direction (GAP wants a lower rate than the token), so
besides each classifier's best rate the study reports, per rate, the paired
GAP − token difference over seeds: a shift of GAP's optimum to lower rates
shows as a positive difference at the low rates and a negative one at the high.
"""

import math

import numpy as np

from experiments.mini import evidence, report
from experiments.mini.models import baseline
from experiments.mini.runs import PRETRAIN_STEPS, accuracy, pretrain_config, train

TITLE = "Class token vs. GAP (App. D.3)"
CLAIM = evidence.Claim(
    quote=(
        "the difference in performance is fully explained by the requirement for a different "
        "learning-rate"
    ),
    source="App. D.3, Fig. 9",
    comparison=(
        "held-out accuracy of the class token and GAP at every Adam rate of the grid; per "
        "seed, each classifier's best rate and its accuracy there: GAP − token accuracy at "
        "their own best rates, and log2(GAP's best rate / the token's), paired over seeds"
    ),
    rule=(
        "holds when the accuracies at the best rates are equal within ±1 point (95% "
        "interval) and GAP's best rate is lower (interval of the log-ratio below zero); "
        "partly when one of the two holds; does not hold when neither does and one of them "
        "is resolved against the claim (GAP's best rate higher, or the accuracies more than "
        "1 point apart: the interval beyond ±1 point); not testable otherwise"
    ),
)
EQUAL_MARGIN = 0.01
COST = (
    "~200 CPU-minutes on 2 cores: 2 classifiers × 4 rates × 3 seeds of 940 steps at batch "
    "128 at 1.89 steps/s (experiments/results/mini_rates.json)"
)
DEFAULT_SEEDS = (0, 1, 2)
CLASSIFIERS = ("token", "gap")
LEARNING_RATES = (5e-4, 1e-3, 2e-3, 4e-3)
MODEL = baseline()
STEPS = PRETRAIN_STEPS // 2
TRAIN, HELD_OUT = "train[:27000]", "train[27000:]"
TOY_TRAIN, TOY_HELD_OUT = "train[:80%]", "train[80%:]"


def _train(setting, classifier: str, lr: float, seed: int):
    config = pretrain_config(
        setting,
        MODEL.with_options(classifier=classifier),
        lr=lr,
        train_split=setting.pick(TRAIN, TOY_TRAIN),
        test_split=setting.pick(HELD_OUT, TOY_HELD_OUT),
        seed=seed,
        steps=STEPS,
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
    """Per rate: GAP − token held-out accuracy, paired by seed (mean ± sample std)."""
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
                    "sample_std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
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
        f"Adam steps at batch 128 on {setting.pick(TRAIN, TOY_TRAIN)} of classes 0-4 "
        "(configs/fashion_mnist.py's recipe at half its length); accuracies on "
        f"{setting.pick(HELD_OUT, TOY_HELD_OUT)} (held out) and on the test set. "
        f"Best held-out rate per seed: {per_seed}. "
        f"On the mean over seeds GAP's best rate is {best['gap']['mean']:g} and the token's "
        f"{best['token']['mean']:g} ({shift:+.1f} decades). The second table pairs the two "
        "classifiers seed by seed at each rate."
    )
    return report.StudyResult(records, summary, table, [plot], notes)


def judge(records) -> evidence.Verdict:
    """CLAIM.rule on the records."""
    short = evidence.too_few_seeds(records)
    if short:
        return short
    seeds = sorted({r["seed"] for r in records})
    best = {}
    for classifier in CLASSIFIERS:
        for seed in seeds:
            mine = [r for r in records if r["classifier"] == classifier and r["seed"] == seed]
            best[classifier, seed] = max(mine, key=lambda r: r["held_out_accuracy"])
    accuracy_gap = evidence.paired(
        {s: best["gap", s]["held_out_accuracy"] for s in seeds},
        {s: best["token", s]["held_out_accuracy"] for s in seeds},
    )
    rate_ratio = evidence.t_interval(
        [math.log2(best["gap", s]["lr"] / best["token", s]["lr"]) for s in seeds], scale=1.0
    )
    equal, lower = accuracy_gap.within(EQUAL_MARGIN), rate_ratio.below_zero
    findings = [
        "best rate per seed: "
        + "; ".join(
            f"seed {s}: token {best['token', s]['lr']:g}, GAP {best['gap', s]['lr']:g}"
            for s in seeds
        ),
        f"GAP − token held-out accuracy at their best rates: {accuracy_gap.text()}",
        f"log2(GAP's best rate / token's): {rate_ratio.text('octaves')}",
    ]
    estimates = {"GAP − token at best rates": accuracy_gap, "log2 rate ratio": rate_ratio}
    if equal and lower:
        return evidence.Verdict(evidence.HOLDS, findings, estimates)
    if equal or lower:
        return evidence.Verdict(evidence.PARTLY, findings, estimates)
    if rate_ratio.above_zero or accuracy_gap.apart(EQUAL_MARGIN):
        return evidence.Verdict(evidence.FAILS, findings, estimates)
    return evidence.Verdict(evidence.NOT_TESTABLE, findings, estimates)

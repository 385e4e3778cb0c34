"""Study 4 — class token vs. global average pooling (App. D.3, Fig. 9).

Each classifier gets a small learning-rate sweep; the rate is chosen on a
held-out slice of the training set (train[54000:], as the paper selects
hyper-parameters on held-out data), and the chosen rate is then run with
every seed and reported on the test set.
"""

from experiments.mini import report
from experiments.mini.models import vit
from experiments.mini.runs import FASHION_MNIST, PRETRAIN_STEPS, accuracy, pretrain_config, train

TITLE = "Class token vs. GAP (App. D.3)"
CLAIM = "Class token and GAP reach the same accuracy, but GAP needs a different learning rate."
DEFAULT_SEEDS = (0, 1, 2)
CLASSIFIERS = ("token", "gap")
# 1e-2 added after both classifiers chose 3e-3, the first grid's largest.
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
    """The sweep with the first seed, then the chosen rate with the others."""
    return len(CLASSIFIERS) * (len(setting.subset(LEARNING_RATES)) + len(setting.seeds) - 1)


def run(setting) -> report.StudyResult:
    first, *others = setting.seeds
    rates = setting.subset(LEARNING_RATES)
    records = [_train(setting, c, lr, first) for c in CLASSIFIERS for lr in rates]
    best_lr = {
        c: max((r for r in records if r["classifier"] == c), key=lambda r: r["held_out_accuracy"])[
            "lr"
        ]
        for c in CLASSIFIERS
    }
    records += [_train(setting, c, best_lr[c], seed) for c in CLASSIFIERS for seed in others]
    metrics = ("held_out_accuracy", "test_accuracy")
    summary = report.summarise(records, ("classifier", "lr"), metrics)
    for row in summary:
        row["chosen"] = "yes" if best_lr[row["classifier"]] == row["lr"] else ""
    table = report.markdown_table(
        summary,
        {
            "classifier": "classifier",
            "lr": "Adam lr",
            "chosen": "best on held-out",
            "held_out_accuracy": "held-out accuracy",
            "test_accuracy": "test accuracy",
        },
        percent=metrics,
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
    notes = (
        f"Sweep with seed {first}; the chosen rate is also run with seeds {list(others)} "
        f"(its row's mean ± std covers all seeds). {STEPS} steps at batch 128."
    )
    return report.StudyResult(records, summary, table, [plot], notes)

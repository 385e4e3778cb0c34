"""Study 6 — transfer to a low-label target (Sec. 3.2, Sec. 4.2).

The baseline ViT pre-trained on Fashion-MNIST's classes 0-4 (30k labelled
images), then fine-tuned on 10 or 50 labelled images per class of classes
5-9 (about: the first 50 or 250 training images of those classes), against
the same model trained from scratch on those labels, and few-shot probes of
the pre-trained features against those of the untrained model. The target
has few labels, as VTAB-1k's tasks do, so pre-training has room to show.
Rates are chosen per method and label count on the held-out training images
of classes 5-9 (train[5000:], never trained on) with the first seed.
"""

from experiments.mini import evidence, report
from experiments.mini.models import baseline
from experiments.mini.runs import (
    PRETRAIN_STEPS,
    TARGET,
    accuracy,
    fewshot_accuracy,
    finetune_config,
    pretrain_config,
    train,
    untrained,
)

TITLE = "Transfer to a low-label target"
CLAIM = evidence.Claim(
    quote=(
        "Typically, we pre-train ViT on large datasets, and fine-tune to (smaller) downstream "
        "tasks."
    ),
    source="Sec. 3.2; Sec. 4.2 (Table 2, VTAB-1k: 1,000 training examples per task)",
    comparison=(
        "test accuracy on classes 5-9 after fine-tuning the pre-trained model on 10 and 50 "
        "labels per class minus training it from scratch on them; 10-shot probe of the "
        "pre-trained features minus the untrained ones; each paired over seeds"
    ),
    rule=(
        "holds when fine-tuning beats scratch at both label counts and the pre-trained probe "
        "beats the untrained one (95% intervals above zero); does not hold when fine-tuning "
        "is resolved behind scratch at both; partly when some of the three hold; not "
        "testable when none is resolved"
    ),
)
COST = (
    "~80 CPU-minutes on 2 cores: 3 pre-trainings of 1,880 steps (50 min at 1.89 steps/s, "
    "experiments/results/mini_rates.json; shared with study 3) and, per label count and "
    "method, a 2-rate sweep then 3 seeds of 300 steps at batch 64 (6,000 steps)"
)
DEFAULT_SEEDS = (0, 1, 2)
MODEL = baseline()
LABELS_PER_CLASS = (10, 50)
TARGET_STEPS = 300
FINETUNE_LRS = (0.01, 0.03)
SCRATCH_LRS = (1e-3, 2e-3)
HELD_OUT = "train[5000:]"


def pretrained(setting, seed: int, steps: int = PRETRAIN_STEPS, **options):
    """The pre-training of studies 3 and 6 (1-D position embeddings); `steps`
    (the warm-up and logging follow it) and options (e.g. objective) change it."""
    config = pretrain_config(setting, MODEL.with_options(posemb="learn_1d"), seed=seed, steps=steps)
    for field, value in options.items():
        setattr(config, field, value)
    label = "-".join(["pretrain", *map(str, options.values()), f"{steps}", f"s{seed}"])
    return train(setting, config, label)


def target_run(setting, labels: int, seed: int, lr: float, source=None, held_out=False):
    """Accuracy on classes 5-9 (test, or HELD_OUT) after training on `labels`
    per class: fine-tuned from `source` (Trained) or from scratch (None)."""
    split = setting.pick(f"train[:{5 * labels}]", "train")
    common = dict(
        dataset=TARGET,
        seed=seed,
        steps=TARGET_STEPS,
        image_size=28,
        batch_size=64,
        lr=lr,
        train_split=split,
        test_split=setting.pick(HELD_OUT, "test") if held_out else "test",
    )
    if source is None:
        config = pretrain_config(setting, MODEL, **common)
    else:
        config = finetune_config(setting, MODEL, pretrained=source.npz, **common)
    name = "scratch" if source is None else source.workdir.rsplit("/", 1)[-1]
    return accuracy(train(setting, config, f"target{labels}-{name}-lr{lr:g}-s{seed}"))


def tuned(setting, labels: int, sources: dict | None, method: str) -> list[dict]:
    """Records of one method: the rate chosen on HELD_OUT with the first seed,
    then every seed at it. `sources`: seed → Trained, None from scratch."""
    first = setting.seeds[0]
    rates = setting.subset(SCRATCH_LRS if sources is None else FINETUNE_LRS)
    source = (sources or {}).get
    held_out = {lr: target_run(setting, labels, first, lr, source(first), True) for lr in rates}
    lr = max(held_out, key=held_out.get)
    return [
        dict(
            method=method,
            labels=labels,
            seed=seed,
            lr=lr,
            target_accuracy=target_run(setting, labels, seed, lr, source(seed)),
        )
        for seed in setting.seeds
    ]


def runs_per_method(setting, fine_tuning: bool) -> int:
    rates = setting.subset(FINETUNE_LRS if fine_tuning else SCRATCH_LRS)
    return len(setting.subset(LABELS_PER_CLASS)) * (len(rates) + len(setting.seeds))


def planned_runs(setting) -> int:
    return len(setting.seeds) + runs_per_method(setting, True) + runs_per_method(setting, False)


def run(setting) -> report.StudyResult:
    sources = {seed: pretrained(setting, seed) for seed in setting.seeds}
    records = []
    for labels in setting.subset(LABELS_PER_CLASS):
        records += tuned(setting, labels, sources, "fine-tuned")
        records += tuned(setting, labels, None, "from scratch")
    for seed, source in sources.items():
        for name, features in (("pre-trained", source), ("untrained", None)):
            features = features or untrained(setting, source.config)
            records.append(
                dict(
                    method=f"10-shot probe, {name}",
                    labels=10,
                    seed=seed,
                    lr=None,
                    target_accuracy=fewshot_accuracy(setting, features, TARGET, 10),
                )
            )
    summary = report.summarise(records, ("method", "labels"), ("target_accuracy",))
    table = report.markdown_table(
        summary,
        {"method": "method", "labels": "labels per class", "target_accuracy": "test accuracy"},
        percent=("target_accuracy",),
    )
    plot = report.bar_plot(
        f"{setting.out_dir}/transfer.png",
        [dict(row, method=f"{row['method']}, {row['labels']}/class") for row in summary],
        category="method",
        metrics={"target_accuracy": "classes 5-9 test"},
        ylabel="accuracy (%)",
    )
    rates = {(r["method"], r["labels"]): r["lr"] for r in records if r["lr"] is not None}
    notes = (
        "Pre-training: configs/fashion_mnist.py's model and recipe on the 30k images of "
        f"classes 0-4; target runs: {setting.steps(TARGET_STEPS)} steps at batch 64 on the "
        "first 5 × labels training images of classes 5-9 (about that many per class), "
        "fine-tuning with SGD (Table 4's recipe), scratch with the pre-training recipe; "
        f"rates chosen on {HELD_OUT}: "
        + ", ".join(f"{m} at {n}/class → {lr:g}" for (m, n), lr in rates.items())
        + ". Probes: ridge on frozen pre-logits, mean of 3 draws. What this cannot show: "
        "the source and target are one domain split by class, nearer than ImageNet-21k is "
        "to VTAB's tasks."
    )
    return report.StudyResult(records, summary, table, [plot], notes)


def judge(records) -> evidence.Verdict:
    """CLAIM.rule on the records."""
    short = evidence.too_few_seeds(records)
    if short:
        return short
    estimates = {}
    for labels in sorted({r["labels"] for r in records if r["method"] == "fine-tuned"}):
        at = [r for r in records if r["labels"] == labels]
        estimates[f"fine-tuned − scratch, {labels}/class"] = evidence.paired_metric(
            at, "target_accuracy", "method", "fine-tuned", "from scratch"
        )
    probes = ("10-shot probe, pre-trained", "10-shot probe, untrained")
    estimates["probe: pre-trained − untrained"] = evidence.paired_metric(
        records, "target_accuracy", "method", *probes
    )
    findings = [f"{name}: {e.text()}" for name, e in estimates.items()]
    finetuning = [e for name, e in estimates.items() if name.startswith("fine-tuned")]
    if all(e.above_zero for e in estimates.values()):
        return evidence.Verdict(evidence.HOLDS, findings, estimates)
    if all(e.below_zero for e in finetuning):
        return evidence.Verdict(evidence.FAILS, findings, estimates)
    if any(e.above_zero for e in estimates.values()):
        return evidence.Verdict(evidence.PARTLY, findings, estimates)
    return evidence.Verdict(evidence.NOT_TESTABLE, findings, estimates)

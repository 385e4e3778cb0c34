"""Study 3 — position embeddings (App. D.4, Table 8).

The baseline ViT (configs/fashion_mnist.py's 6×64 on 4×4 patches, a 7×7
grid) pre-trained on Fashion-MNIST's classes 0-4 with no, 1-D, 2-D or
relative position information (vit_jax.models.vit: AddPositionEmbs with
posemb none, learn_1d or learn_2d; "relative" is App. D.4's relative
attention, a second attention logit between each query and learned
embeddings of the relative offset, added to the content logits); compared by
5-shot linear accuracy on classes 5-9, as Table 8 compares by 5-shot linear
ImageNet accuracy.
"""

import itertools

from experiments.mini import evidence, report
from experiments.mini.models import baseline
from experiments.mini.runs import pretrain_config, score_pretrained, train, untrained

TITLE = "Position embeddings (Table 8)"
CLAIM = evidence.Claim(
    quote=(
        "while there is a large gap between the performances of the model with no positional "
        "embedding and models with positional embedding, there is little to no difference "
        "between different ways of encoding positional information"
    ),
    source="App. D.4, Table 8",
    comparison=(
        "5-shot accuracy on classes 5-9 after pre-training on classes 0-4: each of 1-D, 2-D "
        "and relative minus none, and the three pairwise differences among them, paired over "
        "seeds"
    ),
    rule=(
        f"holds when every kind is ahead of none (95% interval above zero) and every "
        f"pairwise interval among the three lies within ±{100 * 0.01:g} point; partly when "
        "every kind is ahead of none but the three are not shown equal, or when some kinds "
        "are ahead of none and no kind is behind it; does not hold when a "
        "kind is resolved behind none, or none is ahead of no kind while some pair differs; "
        "not testable when nothing is resolved"
    ),
)
EQUAL_MARGIN = 0.01  # One point: Table 8's kinds lie within 0.2, its none gap is 2.6-2.8.
COST = (
    "~200 CPU-minutes on 2 cores: 4 kinds × 3 seeds of 1,880 steps at batch 128 at "
    "1.89 steps/s (experiments/results/mini_rates.json), plus the probes"
)
DEFAULT_SEEDS = (0, 1, 2)
KINDS = ("none", "learn_1d", "learn_2d", "relative")
MODEL = baseline()
METRICS = {
    "target_5shot": "5-shot classes 5-9",
    "untrained_5shot": "untrained 5-shot classes 5-9",
    "test_accuracy": "classes 0-4 test",
}


def planned_runs(setting) -> int:
    return len(setting.subset(KINDS)) * len(setting.seeds)


def pretraining_config(setting, kind: str, seed: int):
    return pretrain_config(setting, MODEL.with_options(posemb=kind), seed=seed)


def run(setting) -> report.StudyResult:
    from experiments.mini.runs import TARGET, fewshot_accuracy

    records = []
    for kind in setting.subset(KINDS):
        for seed in setting.seeds:
            config = pretraining_config(setting, kind, seed)
            trained = train(setting, config, f"posemb-{kind}-s{seed}")
            floor = fewshot_accuracy(setting, untrained(setting, config), TARGET)
            records.append(
                dict(
                    posemb=kind,
                    seed=seed,
                    **score_pretrained(setting, trained),
                    untrained_5shot=floor,
                )
            )
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
        f"{MODEL.label} (configs/fashion_mnist.py's model and recipe), "
        f"{setting.steps(1880)} steps at batch 128 on the 30k images of classes 0-4; "
        "few-shot: ridge probe on frozen pre-logits, 5 images per class, mean over 3 draws, "
        "scored on the 5,000 test images of classes 5-9; 'untrained' is the same probe of "
        "the model as initialised. What this cannot show: a 7×7 grid has little 2-D "
        "structure to exploit beyond what 1-D embeddings learn, as the paper notes for "
        "small grids (App. D.4)."
    )
    return report.StudyResult(records, summary, table, [plot], notes)


def judge(records, metric: str = "target_5shot") -> evidence.Verdict:
    """CLAIM.rule on the records."""
    short = evidence.too_few_seeds(records)
    if short:
        return short
    kinds = [k for k in KINDS[1:] if any(r["posemb"] == k for r in records)]
    over_none = {k: evidence.paired_metric(records, metric, "posemb", k, "none") for k in kinds}
    pairs = {
        (a, b): evidence.paired_metric(records, metric, "posemb", a, b)
        for a, b in itertools.combinations(kinds, 2)
    }
    findings = [f"{k} − none: {e.text()}" for k, e in over_none.items()]
    findings += [f"{a} − {b}: {e.text()}" for (a, b), e in pairs.items()]
    estimates = {f"{k} − none": e for k, e in over_none.items()}
    estimates.update({f"{a} − {b}": e for (a, b), e in pairs.items()})
    all_ahead = all(e.above_zero for e in over_none.values())
    equal = all(e.within(EQUAL_MARGIN) for e in pairs.values())
    if all_ahead and equal:
        return evidence.Verdict(evidence.HOLDS, findings, estimates)
    if all_ahead:
        return evidence.Verdict(evidence.PARTLY, findings, estimates)
    some_differ = any(e.above_zero or e.below_zero for e in pairs.values())
    if any(e.below_zero for e in over_none.values()) or (
        not any(e.above_zero for e in over_none.values()) and some_differ
    ):
        return evidence.Verdict(evidence.FAILS, findings, estimates)
    if any(e.above_zero for e in over_none.values()):
        return evidence.Verdict(evidence.PARTLY, findings, estimates)
    return evidence.Verdict(evidence.NOT_TESTABLE, findings, estimates)

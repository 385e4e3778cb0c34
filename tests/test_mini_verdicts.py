"""Each study's rule (`judge`) on records built to land in each of its
verdicts: the verdict a study prints at full size is the one its stated rule
gives, checked here without training anything. The records carry the fields
the study writes; accuracies are fractions, a point is 0.01."""

import math

import pytest

from experiments.mini import (
    analysis,
    classifier,
    compute,
    data_size,
    mpp,
    posemb,
    resolution,
    transfer,
)
from experiments.mini.evidence import FAILS, HOLDS, NOT_TESTABLE, PARTLY

SEEDS = (0, 1, 2)
JITTER = {0: 0.0, 1: 0.002, 2: -0.002}  # A fifth of a point of seed noise.


def per_seed(value: float, **fields) -> list[dict]:
    return [dict(fields, seed=s, **{k: v + JITTER[s] for k, v in value.items()}) for s in SEEDS]


# Study 3: position embeddings.


def _posemb(accuracies: dict[str, float]) -> list[dict]:
    return [
        r
        for kind, accuracy in accuracies.items()
        for r in per_seed({"target_5shot": accuracy}, posemb=kind)
    ]


@pytest.mark.parametrize(
    "accuracies, verdict",
    [
        (dict(none=0.60, learn_1d=0.70, learn_2d=0.701, relative=0.699), HOLDS),
        (dict(none=0.60, learn_1d=0.70, learn_2d=0.75, relative=0.70), PARTLY),
        (dict(none=0.70, learn_1d=0.65, learn_2d=0.70, relative=0.70), FAILS),
    ],
)
def test_position_embedding_rule(accuracies, verdict):
    assert posemb.judge(_posemb(accuracies)).verdict == verdict


def test_position_embedding_rule_without_a_second_seed_is_not_testable():
    records = [r for r in _posemb(dict(none=0.6, learn_1d=0.7)) if r["seed"] == 0]
    assert posemb.judge(records).verdict == NOT_TESTABLE


# Study 4: class token against GAP.


def _classifier(best: dict[str, tuple[float, float]]) -> list[dict]:
    """classifier → (its best rate, the accuracy there); 3 points lower elsewhere."""
    records = []
    for name, (best_lr, peak) in best.items():
        for lr in classifier.LEARNING_RATES:
            accuracy = peak if lr == best_lr else peak - 0.03
            records += per_seed({"held_out_accuracy": accuracy}, classifier=name, lr=lr)
    return records


@pytest.mark.parametrize(
    "best, verdict",
    [
        (dict(token=(2e-3, 0.90), gap=(1e-3, 0.90)), HOLDS),  # Equal, at a lower rate.
        (dict(token=(2e-3, 0.90), gap=(2e-3, 0.90)), PARTLY),  # Equal at the same rate.
        (dict(token=(2e-3, 0.90), gap=(1e-3, 0.85)), PARTLY),  # Lower rate, 5 points behind.
        (dict(token=(1e-3, 0.90), gap=(4e-3, 0.85)), FAILS),  # Higher rate and apart.
        (dict(token=(2e-3, 0.90), gap=(2e-3, 0.85)), FAILS),  # Apart at the same rate.
    ],
)
def test_class_token_rule(best, verdict):
    assert classifier.judge(_classifier(best)).verdict == verdict


def test_class_token_rule_with_an_interval_straddling_the_margin_is_not_testable():
    # GAP 1 point behind with ±2 points of seed noise: neither equal within
    # ±1 point nor resolved apart, at the token's rate.
    records = _classifier(dict(token=(2e-3, 0.90), gap=(2e-3, 0.89)))
    for r in records:
        if r["classifier"] == "gap":
            r["held_out_accuracy"] += {0: 0.0, 1: 0.02, 2: -0.02}[r["seed"]]
    assert classifier.judge(records).verdict == NOT_TESTABLE


# Study 5: higher-resolution fine-tuning.


def _resolution(low: float, high: float, gain: float = 0.0) -> list[dict]:
    records = per_seed({"test_accuracy": low}, variant="fine-tuned at 16 px")
    records += per_seed({"test_accuracy": high}, variant="fine-tuned at 28 px")
    records += per_seed({"test_accuracy": 0.91}, variant="trained at 28 px from scratch")
    for r in records:
        r["last_quarter_gain"] = None if "scratch" in r["variant"] else gain
    return records


@pytest.mark.parametrize(
    "low, high, gain, verdict",
    [
        (0.88, 0.90, 0.001, HOLDS),
        (0.90, 0.88, 0.001, FAILS),
        (0.88, 0.90, 0.01, NOT_TESTABLE),  # Still rising a point over its last quarter.
    ],
)
def test_resolution_rule(low, high, gain, verdict):
    assert resolution.judge(_resolution(low, high, gain)).verdict == verdict


def test_resolution_rule_fails_a_gain_shown_within_half_a_point():
    records = _resolution(0.88, 0.88, 0.001)
    for r in records:
        if r["variant"] == "fine-tuned at 28 px":
            r["test_accuracy"] += {0: 0.0, 1: 0.001, 2: -0.001}[r["seed"]]
    verdict = resolution.judge(records)
    assert verdict.verdict == FAILS
    assert verdict.estimates["28 px − 16 px"].within(resolution.MARGIN)


# Study 6: transfer to a low-label target.


def _transfer(tuned: float, scratch: float, probe: float, floor: float) -> list[dict]:
    records = []
    for labels in (10, 50):
        records += per_seed({"target_accuracy": tuned}, method="fine-tuned", labels=labels)
        records += per_seed({"target_accuracy": scratch}, method="from scratch", labels=labels)
    records += per_seed({"target_accuracy": probe}, method="10-shot probe, pre-trained", labels=10)
    records += per_seed({"target_accuracy": floor}, method="10-shot probe, untrained", labels=10)
    return records


@pytest.mark.parametrize(
    "tuned, scratch, probe, floor, verdict",
    [
        (0.80, 0.70, 0.75, 0.60, HOLDS),
        (0.70, 0.70, 0.75, 0.60, PARTLY),
        (0.60, 0.70, 0.60, 0.60, FAILS),
    ],
)
def test_transfer_rule(tuned, scratch, probe, floor, verdict):
    assert transfer.judge(_transfer(tuned, scratch, probe, floor)).verdict == verdict


# Study 7: masked patch prediction.


def _mpp(scratch: float, masked: float, supervised: float, loss_drop: float) -> list[dict]:
    records = []
    for method, accuracy in (
        ("from scratch", scratch),
        ("masked patch prediction, fine-tuned", masked),
        ("supervised pre-training, fine-tuned", supervised),
    ):
        for labels in (10, 50):
            records += per_seed({"target_accuracy": accuracy}, method=method, labels=labels)
    records += per_seed({"loss_drop": loss_drop}, method="masked-patch loss drop", labels=0)
    return records


@pytest.mark.parametrize(
    "scratch, masked, supervised, loss_drop, verdict",
    [
        (0.70, 0.75, 0.80, 0.005, HOLDS),
        (0.70, 0.75, 0.75, 0.005, PARTLY),
        (0.75, 0.70, 0.70, 0.005, FAILS),
        (0.70, 0.75, 0.80, 0.05, NOT_TESTABLE),  # The loss still falling 5% a fifth.
    ],
)
def test_masked_patch_rule(scratch, masked, supervised, loss_drop, verdict):
    assert mpp.judge(_mpp(scratch, masked, supervised, loss_drop)).verdict == verdict


# Study 2: compute.


def _compute(lines: dict[str, tuple[float, float]]) -> list[dict]:
    """family → (accuracy at 1 PFLOP, points gained per decade), four points
    per family over 1-100 PFLOPs, every family on the same range."""
    records = []
    for family, (start, per_decade) in lines.items():
        for decades in (0.0, 0.5, 1.5, 2.0):
            accuracy = start + per_decade * decades
            records += per_seed({"target_10shot": accuracy}, family=family, petaflops=10**decades)
    return records


@pytest.mark.parametrize(
    "lines, verdict",
    [
        # ViT above BiT; the hybrid ahead at low compute, the gap closing.
        (dict(ViT=(0.60, 0.05), BiT=(0.55, 0.05), hybrid=(0.65, 0.03)), HOLDS),
        # ViT behind BiT, the hybrid level with ViT.
        (dict(ViT=(0.55, 0.05), BiT=(0.60, 0.05), hybrid=(0.55, 0.05)), FAILS),
        # ViT behind BiT, but the hybrid ahead of ViT and closing.
        (dict(ViT=(0.55, 0.05), BiT=(0.60, 0.05), hybrid=(0.60, 0.03)), PARTLY),
    ],
)
def test_compute_rule(lines, verdict):
    assert compute.judge(_compute(lines)).verdict == verdict


def test_compute_rule_needs_a_shared_range_of_compute():
    records = _compute(dict(ViT=(0.6, 0.05), BiT=(0.55, 0.05), hybrid=(0.65, 0.03)))
    for r in records:
        if r["family"] == "BiT":
            r["petaflops"] *= 1e4  # Two decades beyond ViT's largest.
    assert compute.judge(records).verdict == NOT_TESTABLE


# Study 1: data size.


def _data_size(vit: tuple[float, float], bit: tuple[float, float], floor: float) -> list[dict]:
    """model → (best probe at 1k images, points gained per decade)."""
    records = []
    for model, (start, per_decade) in (("ViT-64x6/4", vit), ("BiT-R1-1-1x0.5", bit)):
        for images in data_size.SIZES:
            accuracy = start + per_decade * math.log10(images / 1000)
            records += per_seed(
                {"target_5shot_best": accuracy, "untrained_5shot": floor},
                model=model,
                images=images,
            )
    return records


def test_data_size_rule_holds_when_vit_overtakes():
    verdict = data_size.judge(_data_size(vit=(0.60, 0.10), bit=(0.65, 0.02), floor=0.5))
    assert verdict.verdict == HOLDS
    assert any("crossover reached" in line for line in verdict.findings)
    slopes = [line for line in verdict.findings if line.startswith(("ViT-", "BiT-"))]
    slopes = [line for line in slopes if "'s slope" in line]
    assert len(slopes) == 2 and slopes[0].startswith("ViT-64x6/4's slope")
    assert "+10.00 points" in slopes[0] and "+2.00 points" in slopes[1]


def test_data_size_rule_extrapolates_a_crossover_not_reached():
    verdict = data_size.judge(_data_size(vit=(0.60, 0.04), bit=(0.70, 0.02), floor=0.5))
    assert verdict.verdict == PARTLY
    # BiT 10 points ahead at 1k, 7.05 at 30k, ViT gaining 2 points a decade
    # more: level 3.5 decades past 30k images.
    assert any(
        "near 100,000,000 images (3.5 decades beyond the largest)" in line
        for line in verdict.findings
    )


@pytest.mark.parametrize(
    "vit, bit, floor, verdict",
    [
        ((0.60, 0.02), (0.65, 0.05), 0.5, FAILS),  # ViT's slope shallower.
        ((0.70, 0.10), (0.65, 0.02), 0.5, FAILS),  # ViT ahead at the smallest size.
        ((0.60, 0.10), (0.65, 0.02), 0.95, NOT_TESTABLE),  # No lift over untrained.
    ],
)
def test_data_size_rule(vit, bit, floor, verdict):
    assert data_size.judge(_data_size(vit, bit, floor)).verdict == verdict


# Study 8: attention distance.


def _analysis(far: float, near: float, slope: float, departure: float = 0.2) -> list[dict]:
    """Records of the longest runs (and one earlier, which the rule ignores);
    uniform attention at 14.4 px."""
    records = []
    for steps in (470, 1880):
        records += per_seed(
            {"first_layer_max_px": far, "first_layer_min_px": near, "depth_slope_px": slope},
            steps=steps,
            uniform_px=14.4,
            largest_departure=departure if steps == 1880 else 0.0,
        )
    return records


@pytest.mark.parametrize(
    "far, near, slope, departure, verdict",
    [
        (14.0, 8.0, 1.0, 0.4, HOLDS),  # Some heads far, some near; distance grows with depth.
        (14.0, 13.5, 1.0, 0.1, PARTLY),  # Grows with depth, but no first-layer head is local.
        (14.0, 8.0, -1.0, 0.4, PARTLY),
        (14.0, 13.5, -1.0, 0.1, FAILS),
        (14.0, 13.5, 1.0, 0.01, NOT_TESTABLE),  # Every head within 1% of uniform.
    ],
)
def test_attention_distance_rule(far, near, slope, departure, verdict):
    records = _analysis(far, near, slope, departure)
    assert analysis.judge(records).verdict == verdict

"""The studies' statistics and verdict rules (experiments/mini/evidence.py):
sample standard deviations, paired 95% t-intervals, and the words a rule may print."""

import numpy as np
import pytest
from scipy import stats

from experiments.mini import evidence, report


def test_t_interval_uses_the_sample_std_and_n_minus_one_degrees_of_freedom():
    values = [0.80, 0.82, 0.87]
    estimate = evidence.t_interval(values, scale=1.0)
    std = np.std(values, ddof=1)
    half = stats.t.ppf(0.975, 2) * std / np.sqrt(3)
    assert estimate.std == pytest.approx(std)
    assert estimate.std > np.std(values)  # Not numpy's default (population) std.
    mean = np.mean(values)
    assert (estimate.low, estimate.high) == pytest.approx((mean - half, mean + half))
    assert estimate.n == 3


def test_one_value_has_no_interval_and_resolves_nothing():
    estimate = evidence.t_interval([0.5])
    assert estimate.std is None and not estimate.resolved
    assert not estimate.above_zero and not estimate.below_zero and not estimate.within(1.0)
    assert "no interval" in estimate.text()


def test_paired_differences_pair_the_same_seed():
    records = [
        dict(arm="a", seed=0, acc=0.70),
        dict(arm="a", seed=1, acc=0.90),
        dict(arm="a", seed=2, acc=0.80),
        dict(arm="b", seed=0, acc=0.68),
        dict(arm="b", seed=1, acc=0.88),
        dict(arm="b", seed=2, acc=0.79),
    ]
    difference = evidence.paired_metric(records, "acc", "arm", "a", "b")
    # Seeds differ by 10 points, the arms by 1-2 on every seed: paired, a is ahead.
    assert difference.mean == pytest.approx(0.05 / 3)
    assert difference.above_zero
    a, b = evidence.t_interval([0.70, 0.90, 0.80]), evidence.t_interval([0.68, 0.88, 0.79])
    assert a.low < b.high  # Comparing the two means' intervals would not resolve it.


def test_a_seed_recorded_twice_is_an_error():
    records = [dict(arm="a", seed=0, acc=0.7), dict(arm="a", seed=0, acc=0.8)]
    with pytest.raises(ValueError, match="two records of seed 0"):
        evidence.by_seed(records, "acc", arm="a")


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    level = evidence.t_interval([0.001, -0.002, 0.0015, 0.0])
    assert level.within(0.01) and not level.above_zero
    wide = evidence.t_interval([0.03, -0.03, 0.02])
    assert not wide.within(0.01)
    assert evidence.direction(wide, "ahead", "behind", "unresolved") == "unresolved"


def test_a_verdict_is_one_of_the_four_words():
    assert evidence.Verdict(evidence.PARTLY, ["x"]).to_json()["verdict"] == "partly"
    with pytest.raises(ValueError, match="not one of"):
        evidence.Verdict("yes", [])
    assert evidence.too_few_seeds([dict(seed=0)]).verdict == evidence.NOT_TESTABLE
    assert evidence.too_few_seeds([dict(seed=0), dict(seed=1)]) is None


def test_summaries_and_tables_give_the_sample_std_and_say_so():
    records = [dict(kind="a", seed=s, acc=v) for s, v in enumerate((0.5, 0.6, 0.7))]
    (row,) = report.summarise(records, ("kind",), ("acc",))
    assert row["acc"]["sample_std"] == pytest.approx(0.1)
    table = report.markdown_table([row], {"kind": "kind", "acc": "accuracy"}, percent=("acc",))
    assert "sample std (ddof=1)" in table and "n=3" in table
    assert "60.00 ± 10.00" in table

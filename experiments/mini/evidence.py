"""Claims, statistics and the rules that turn a study's numbers into a verdict.

A study states, in code and before it runs, a `Claim`: the paper's words and
where they are (section, figure or table), what is compared here, and the rule
in words. Its `judge(records)` applies that rule and returns a `Verdict`, one
of VERDICTS with the findings it rests on; the JSON, STUDY.md, README.md and
experiments/README.md print that verdict and nothing else.

Statistics: a comparison is a paired difference over seeds (the same seed
gives both arms the same initialisation and data order), summarised by its
mean, its sample standard deviation (ddof=1) and a 95% t-interval with n − 1
degrees of freedom. One seed gives no interval, and a rule that needs one
answers "not testable at this scale".
"""

import dataclasses
import math

import numpy as np
from scipy import stats

HOLDS = "holds"
PARTLY = "partly"
FAILS = "does not hold"
NOT_TESTABLE = "not testable at this scale"
VERDICTS = (HOLDS, PARTLY, FAILS, NOT_TESTABLE)
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Claim:
    """What a study tests, fixed before it runs."""

    quote: str  # The paper's words.
    source: str  # Where they are: "Sec. 4.3, Fig. 4".
    comparison: str  # What is compared here, on which numbers.
    rule: str  # How the numbers become a verdict, in words (judge() is the code).

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Mean of n values (paired differences, slopes, ...) with the sample std
    (ddof=1) and the 95% t-interval of the mean; std and interval are None for
    one value. `scale` is how the text shows it (100: fractions as points)."""

    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None
    scale: float = 100.0

    @property
    def resolved(self) -> bool:
        return self.low is not None

    @property
    def above_zero(self) -> bool:
        return self.resolved and self.low > 0

    @property
    def below_zero(self) -> bool:
        return self.resolved and self.high < 0

    def within(self, margin: float) -> bool:
        """The whole interval lies inside ±margin: equal up to `margin`."""
        return self.resolved and -margin <= self.low and self.high <= margin

    def apart(self, margin: float) -> bool:
        """The whole interval lies beyond ±margin: different by more than `margin`."""
        return self.resolved and (self.low > margin or self.high < -margin)

    def text(self, unit: str = "points") -> str:
        s = self.scale
        if not self.resolved:
            return f"{s * self.mean:+.2f} {unit} (n={self.n}, no interval)"
        return (
            f"{s * self.mean:+.2f} {unit}, 95% CI [{s * self.low:+.2f}, {s * self.high:+.2f}], "
            f"sample std {s * self.std:.2f}, n={self.n}"
        )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def t_interval(values, scale: float = 100.0) -> Estimate:
    """Mean, sample std (ddof=1) and 95% t-interval of `values`."""
    values = np.asarray(list(values), dtype=float)
    n = len(values)
    if n == 0:
        raise ValueError("t_interval of no values")
    mean = float(values.mean())
    if n < 2:
        return Estimate(mean, None, n, None, None, scale)
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(mean, std, n, mean - half, mean + half, scale)


def by_seed(records, metric: str, **where) -> dict[int, float]:
    """seed → `metric` of the records matching every `where` key (one each)."""
    chosen = {}
    for record in records:
        if all(record.get(k) == v for k, v in where.items()) and record.get(metric) is not None:
            if record["seed"] in chosen:
                raise ValueError(f"two records of seed {record['seed']} match {where}")
            chosen[record["seed"]] = float(record[metric])
    return chosen


def paired(first: dict[int, float], second: dict[int, float], scale: float = 100.0) -> Estimate:
    """first − second over the seeds both have (seed → value maps)."""
    seeds = sorted(set(first) & set(second))
    if not seeds:
        raise ValueError("no seed in common")
    return t_interval([first[s] - second[s] for s in seeds], scale)


def paired_metric(records, metric: str, key: str, a, b, scale: float = 100.0) -> Estimate:
    """`metric` of records with key == a minus those with key == b, paired by seed."""
    return paired(by_seed(records, metric, **{key: a}), by_seed(records, metric, **{key: b}), scale)


def slope(xs, ys) -> float | None:
    """Least-squares slope of ys on xs; None for fewer than two distinct xs
    (no line to fit)."""
    xs = np.asarray(list(xs), float)
    if len(np.unique(xs)) < 2:
        return None
    return float(np.polyfit(xs, np.asarray(list(ys), float), 1)[0])


def direction(estimate: Estimate, ahead: str, behind: str, unresolved: str) -> str:
    """One of three words by where the interval lies against zero."""
    if estimate.above_zero:
        return ahead
    if estimate.below_zero:
        return behind
    return unresolved


@dataclasses.dataclass
class Verdict:
    """What a rule printed: one of VERDICTS and the findings (one sentence
    each, numbers with their intervals) that led to it."""

    verdict: str
    findings: list[str]
    estimates: dict[str, Estimate] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")

    def to_json(self) -> dict:
        return {
            "verdict": self.verdict,
            "findings": list(self.findings),
            "estimates": {k: e.to_json() for k, e in self.estimates.items()},
        }


def too_few_seeds(records, needed: int = 2) -> Verdict | None:
    """The not-testable verdict when the records hold fewer than `needed` seeds."""
    seeds = {r["seed"] for r in records if "seed" in r}
    if len(seeds) < needed:
        return Verdict(
            NOT_TESTABLE,
            [f"{len(seeds)} seed(s): a paired 95% interval needs at least {needed}."],
        )
    return None

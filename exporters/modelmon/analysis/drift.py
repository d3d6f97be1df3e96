"""Drift statistics shared by ``modelmon report`` and ``modelmon skew --no-id``.

Every comparison gives a test statistic, a p-value where the test has one, and an
effect size with a documented threshold. At large samples every p-value is tiny, so
drift is decided on effect size, with significance as a guard against small-sample
noise: a comparison *drifts* when at least one of its effect sizes reaches its
threshold *with confidence* and at least one of its p-values, after the
Benjamini-Hochberg correction over the whole report, is below ``ALPHA``.

Estimated effects are biased upward at small n (a PSI or a Cramér's V of two samples of
one distribution is above 0, and a KS D of 105 values is about 0.08 without any drift),
so an effect counts only when the lower bound of its interval (``effect_lower``)
reaches the threshold; ``effect_upper`` is the interval's other end. The intervals are
simultaneous at ``CONFIDENCE`` over every thresholded effect of a report (Bonferroni:
each at 1 - 0.05 / m for m effects, ``bound``), so that a report of many columns does not
call some by chance. When no effect is called but an upper bound reaches its threshold,
the window cannot rule drift out: the report says it has too few rows to call
(``verdict``). The bounds:

- KS D: D -/+ ``ks_margin``, a DKW-style band c(alpha) sqrt(1/n + 1/N), c = sqrt(ln(2 /
  alpha) / 2) (1.358 at alpha 0.05), that bounds the sup-distance of both empirical CDFs
  from their true CDFs;
- Wasserstein (a lower bound only): the larger of the gap of the means less z(alpha)
  standard errors (W1 >= |mean difference|) and the area between the two empirical CDFs
  after shrinking their gap by the KS band, ``integral max(|F_n - G_N| - margin, 0) dx``;
- PSI, Cramér's V, epsilon squared: their statistic is about a non-central chi-square
  (PSI / (1/n + 1/N) with k - 1 degrees of freedom, Yurdakul 2018); the non-centrality,
  bias-corrected (statistic minus its degrees of freedom: PSI - (k - 1)(1/n + 1/N), the
  alert rules' correction), is bounded by a normal approximation, +/- z(alpha) sd.

PSI and Jensen-Shannon are computed on the reference bins exactly as the Prometheus
recording rules do (shares floored at ``SHARE_FLOOR``, natural logarithm, no
renormalisation), so a report and a dashboard show the same numbers for the same
window. The statistical tests come from scipy, imported when a test runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..serving.metrics import ALERT_THRESHOLDS

# Empty shares are floored here before PSI, Jensen-Shannon and chi-square, as in the
# Prometheus rules' clamp_min(..., 1e-4) (prometheus/rules/*.rules.yml).
SHARE_FLOOR = 1e-4
ALPHA = 0.05  # false discovery rate of the Benjamini-Hochberg correction
MIN_SAMPLE = 20  # values a sample (or a group) needs before it is tested
CONFIDENCE = 0.95  # simultaneous two-sided intervals of a report's effect sizes; the lower ends decide
CORRECTION = "benjamini-hochberg"

# Effect-size thresholds (at or above: the effect counts as drift).
THRESHOLDS: dict[str, float] = {
    "psi": ALERT_THRESHOLDS["ModelmonFeatureDrift"],  # 0.2, the alert's default
    "ks_d": 0.1,  # Kolmogorov-Smirnov D: largest gap between the two CDFs
    "wasserstein_sd": 0.1,  # Wasserstein distance in reference standard deviations
    "cramers_v": 0.1,  # Cramér's V; 0.1 is Cohen's "small" effect
    # live share of the bins the training data never had (out of range, unseen): 1% of the
    # values where training had none (a live value passes a continuous training maximum
    # of N values with probability 1 / (N + 1))
    "new_bin_share": 0.01,
    "epsilon_squared": 0.01,  # Kruskal-Wallis H / (n - 1); 0.01 is "small"
}


def require_scipy() -> None:
    """Fail with the install command, not a traceback, when scipy is missing."""
    try:
        import scipy  # noqa: F401
    except ImportError:
        raise ValueError("the statistics need scipy: pip install 'modelmon[report]'") from None


@dataclass
class TestResult:
    """One comparison: statistic, p-value (None for pure distances) and effect size."""

    test: str
    statistic: float
    p_value: float | None
    effect: str
    effect_value: float | None
    p_adjusted: float | None = None
    effect_lower: float | None = None  # interval of the effect (see ``bound``); None: the estimate stands in
    effect_upper: float | None = None
    # alpha -> (lower, upper): the effect's interval at confidence 1 - alpha
    bounds: Callable[[float], tuple[float | None, float | None]] | None = field(
        default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bounds is not None:
            self.effect_lower, self.effect_upper = self.bounds(1 - CONFIDENCE)

    @property
    def threshold(self) -> float | None:
        return THRESHOLDS.get(self.effect)

    @property
    def exceeded(self) -> bool:
        """The effect reaches its threshold with confidence: the lower end of its interval does."""
        lower = self.effect_lower if self.effect_lower is not None else self.effect_value
        return bool(self.threshold is not None and lower is not None and lower >= self.threshold)

    @property
    def undecided(self) -> bool:
        """Not exceeded, but the interval reaches the threshold: more rows could call it either way."""
        upper = self.effect_upper if self.effect_upper is not None else self.effect_value
        return bool(self.threshold is not None and not self.exceeded and upper is not None
                    and upper >= self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "effect": self.effect,
            "effect_value": self.effect_value,
            "effect_lower": None if self.effect_lower is None else float(self.effect_lower),
            "effect_upper": None if self.effect_upper is None else float(self.effect_upper),
            "threshold": self.threshold,
            "exceeded": bool(self.exceeded),
        }


def bound(results: Iterable[TestResult]) -> int:
    """Set every thresholded effect's interval, simultaneous at ``CONFIDENCE`` over them
    (Bonferroni: each at alpha = (1 - CONFIDENCE) / m); returns m."""
    bounded = [r for r in results if r.bounds is not None and r.threshold is not None]
    alpha = (1 - CONFIDENCE) / max(len(bounded), 1)
    for result in bounded:
        result.effect_lower, result.effect_upper = result.bounds(alpha)  # type: ignore[misc]
    return len(bounded)


def z_quantile(alpha: float) -> float:
    """The normal quantile of a two-sided interval at confidence 1 - alpha."""
    return NormalDist().inv_cdf(1 - alpha / 2)


def noncentrality_bounds(statistic: float, df: float, alpha: float) -> tuple[float, float]:
    """An interval of lambda for a statistic ~ non-central chi-square(df, lambda), at 1 -
    alpha: bias-corrected estimate statistic - df, +/- z sd, sd = sqrt(2 (df + 2 lambda))
    (normal approximation), clamped at 0."""
    estimate = max(statistic - df, 0.0)
    sd = math.sqrt(2 * (df + 2 * estimate))
    z = z_quantile(alpha)
    return max(statistic - df - z * sd, 0.0), max(statistic - df + z * sd, 0.0)


def ks_margin(n: float, reference_n: float | None, alpha: float = 1 - CONFIDENCE) -> float:
    """Half-width of the DKW-style band of a KS D of n live values against N reference
    values at 1 - alpha: 2 exp(-2 c^2) = alpha."""
    return math.sqrt(math.log(2 / alpha) / 2) * math.sqrt(1 / n + (1 / reference_n if reference_n else 0.0))


def _ks_bounds(d: float, n: float, reference_n: float | None) -> Callable[[float], tuple[float, float]]:
    def bounds(alpha: float) -> tuple[float, float]:
        margin = ks_margin(n, reference_n, alpha)
        return max(d - margin, 0.0), min(d + margin, 1.0)
    return bounds


def _chi_bounds(statistic: float, df: float, scale: float,
                root: bool) -> Callable[[float], tuple[float, float]]:
    """Bounds of an effect lambda * scale (or its square root) from the statistic's non-centrality."""
    def bounds(alpha: float) -> tuple[float, float]:
        low, high = noncentrality_bounds(statistic, df, alpha)
        return (math.sqrt(low * scale), math.sqrt(high * scale)) if root else (low * scale, high * scale)
    return bounds


def floored(shares: Sequence[float]) -> np.ndarray:
    return np.maximum(np.asarray(shares, dtype=np.float64), SHARE_FLOOR)


def psi(live: Sequence[float], reference: Sequence[float]) -> float:
    """Population stability index of live against reference shares, floored."""
    p, q = floored(live), floored(reference)
    return float(np.sum((p - q) * np.log(p / q)))


def js_divergence(live: Sequence[float], reference: Sequence[float]) -> float:
    """Jensen-Shannon divergence (natural log, 0 .. ln 2) of floored shares."""
    from scipy.special import rel_entr

    p, q = floored(live), floored(reference)
    m = (p + q) / 2
    return float((rel_entr(p, m).sum() + rel_entr(q, m).sum()) / 2)


def _occupied(counts: Sequence[int], shares: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Counts and reference shares of the bins with mass on either side."""
    c, s = np.asarray(counts, dtype=np.float64), np.asarray(shares, dtype=np.float64)
    keep = (c > 0) | (s > 0)
    return c[keep], s[keep]


MIN_EXPECTED = 5.0  # Cochran's rule: the chi-square approximation needs about 5 expected values a bin


def pooled(observed: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bins whose expected count is under ``MIN_EXPECTED`` pooled into one (joined by the
    smallest other bins until it reaches it), so that one value in a bin the training data
    never filled (expected n * 1e-4) cannot make a chi-square of 100 at n = 105."""
    small = expected < MIN_EXPECTED
    if not small.any():
        return observed, expected
    rest = np.flatnonzero(~small)
    rest = rest[np.argsort(expected[rest], kind="stable")]
    pool_o, pool_e = float(observed[small].sum()), float(expected[small].sum())
    taken = 0
    while pool_e < MIN_EXPECTED and taken < len(rest):
        pool_o, pool_e = pool_o + observed[rest[taken]], pool_e + expected[rest[taken]]
        taken += 1
    keep = np.sort(rest[taken:])
    return np.append(observed[keep], pool_o), np.append(expected[keep], pool_e)


def binned_tests(counts: Sequence[int], shares: Sequence[float], reference_rows: int, *,
                 chi_square: bool) -> list[TestResult]:
    """PSI, Jensen-Shannon and (if asked) the chi-square goodness-of-fit test of live
    counts per reference bin against the reference shares.

    PSI's p-value uses its sampling distribution, PSI ~ (1/n + 1/N) chi2(k - 1) for
    samples of n and N values on k bins (Yurdakul 2018). The chi-square test runs on the
    bins the training data had (``goodness_of_fit``); the bins it never had (below its
    minimum, above its maximum, unseen categories) are tested on their own, by their live
    share (``new_bins``): in a chi-square they would expect n * 1e-4 values and make
    Cramér's V explode past its range.
    """
    from scipy import stats

    c, s = _occupied(counts, shares)
    n, k = c.sum(), len(c)
    live = c / n
    seen = s > 0
    results = []
    if chi_square and seen.sum() > 1 and c[seen].sum() > 0:
        results.extend(goodness_of_fit(c[seen], s[seen]))
    if not seen.all():
        results.append(new_bins(float(c[~seen].sum()), float(n)))
    value = psi(live, s)
    scale = float(1 / n + 1 / reference_rows)
    p_psi = float(stats.chi2.sf(value / scale, k - 1)) if k > 1 else None
    results.append(TestResult("psi", value, p_psi, "psi", value,
                              bounds=_chi_bounds(value / scale, k - 1, scale, root=False) if k > 1 else None))
    js = js_divergence(live, s)
    results.append(TestResult("jensen_shannon", js, None, "js_divergence", js))
    return results


def goodness_of_fit(counts: np.ndarray, shares: np.ndarray) -> list[TestResult]:
    """Chi-square of counts against n times the (floored, renormalised) shares, bins
    expecting fewer than 5 values pooled (``pooled``); effect size the goodness-of-fit
    Cramér's V, sqrt(chi2 / (n (k - 1))) on the k bins tested. It is 0 for identical
    shares and at most sqrt((1 / q - 1) / (k - 1)) for the smallest tested share q: at most
    1 for equal shares (a numeric feature's quantile bins)."""
    from scipy import stats

    n = counts.sum()
    observed, expected = pooled(counts, floored(shares) / floored(shares).sum() * n)
    k = len(observed)
    if k < 2:
        return []
    chi2, p = stats.chisquare(observed, expected)
    return [TestResult("chi_square", float(chi2), float(p), "cramers_v", math.sqrt(chi2 / (n * (k - 1))),
                       bounds=_chi_bounds(float(chi2), k - 1, 1 / float(n * (k - 1)), root=True))]


def new_bins(count: float, n: float) -> TestResult:
    """The live share of values in bins the training data never had, with its Wilson
    interval. No p-value: any such value is already a departure from the training data;
    whether it matters is the share's size."""
    share = count / n

    def bounds(alpha: float) -> tuple[float, float]:
        z = z_quantile(alpha)
        centre = (share + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(centre - half, 0.0), min(centre + half, 1.0)

    return TestResult("new_bins", share, None, "new_bin_share", share, bounds=bounds)


def binned_ks(counts: Sequence[int], shares: Sequence[float], reference_rows: int | None = None) -> TestResult:
    """Kolmogorov-Smirnov D on ordered bins (below, in-range bins, above): the largest gap
    between the live and reference CDFs at the reference's edges, a lower bound of the
    D on raw values. No p-value: the chi-square test on the same bins gives one."""
    c, s = np.asarray(counts, dtype=np.float64), np.asarray(shares, dtype=np.float64)
    d = float(np.max(np.abs(np.cumsum(c / c.sum()) - np.cumsum(s / s.sum()))))
    return TestResult("ks_binned", d, None, "ks_d", d, bounds=_ks_bounds(d, float(c.sum()), reference_rows))


def wasserstein_bounded(reference: np.ndarray, live: np.ndarray, margin: float) -> tuple[float, float]:
    """Wasserstein-1 distance of two samples (as scipy's) and its lower bound: the area
    between the empirical CDFs where their gap exceeds ``margin``, less the margin."""
    a, b = np.sort(reference), np.sort(live)
    values = np.concatenate([a, b])
    values.sort(kind="mergesort")
    deltas = np.diff(values)
    gap = np.abs(np.searchsorted(a, values[:-1], "right") / len(a) - np.searchsorted(b, values[:-1], "right") / len(b))
    return float(np.sum(gap * deltas)), float(np.sum(np.maximum(gap - margin, 0.0) * deltas))


def numeric_tests(reference: np.ndarray, live: np.ndarray, stddev: float | None) -> list[TestResult]:
    """Two-sample Kolmogorov-Smirnov and Wasserstein distance on raw finite values."""
    from scipy import stats

    reference, live = np.sort(reference), np.sort(live)  # sorted: the sums below do not depend on the order read
    ks = stats.ks_2samp(reference, live)
    d = float(ks.statistic)
    distance = float(stats.wasserstein_distance(reference, live))
    normalised = distance / stddev if stddev else None

    mean_gap = abs(float(np.mean(live)) - float(np.mean(reference)))
    mean_se = math.sqrt(float(np.var(live)) / len(live) + float(np.var(reference)) / len(reference))

    values = np.concatenate([reference, live])
    values.sort(kind="mergesort")
    deltas = np.diff(values)
    gap = np.abs(np.searchsorted(reference, values[:-1], "right") / len(reference)
                 - np.searchsorted(live, values[:-1], "right") / len(live))

    def wasserstein_bounds(alpha: float) -> tuple[float | None, None]:
        # W1 >= the gap of the means (by a location-shift's standard error), and >= the area
        # between the CDFs outside the DKW band; the larger lower bound of the two
        banded = float(np.sum(np.maximum(gap - ks_margin(len(live), len(reference), alpha), 0.0) * deltas))
        lower = max(banded, mean_gap - z_quantile(alpha) * mean_se, 0.0)
        return (lower / stddev if stddev else None), None

    return [
        TestResult("ks_2samp", d, float(ks.pvalue), "ks_d", d, bounds=_ks_bounds(d, len(live), len(reference))),
        TestResult("wasserstein", distance, None, "wasserstein_sd", normalised, bounds=wasserstein_bounds),
    ]


def kruskal(groups: Sequence[np.ndarray]) -> TestResult:
    """Kruskal-Wallis H across groups; effect size epsilon squared, H / (n - 1)."""
    from scipy import stats

    h, p = stats.kruskal(*groups)
    n = sum(len(g) for g in groups)
    return TestResult("kruskal", float(h), float(p), "epsilon_squared", float(h / (n - 1)),
                      bounds=_chi_bounds(float(h), len(groups) - 1, 1 / (n - 1), root=False))


def independence(table: np.ndarray) -> TestResult:
    """Chi-square test of independence of a groups x categories table (no continuity
    correction); effect size Cramér's V."""
    from scipy import stats

    table = np.asarray(table)
    table = table[:, table.sum(axis=0) > 0]  # counts, or increases read from Prometheus (not integers)
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    r, c = table.shape
    n, m = float(table.sum()), min(r - 1, c - 1)
    v = math.sqrt(chi2 / (n * m))  # scipy's association(method="cramer"), which takes integer counts only
    return TestResult("chi_square_independence", float(chi2), float(p), "cramers_v", float(v),
                      bounds=_chi_bounds(float(chi2), (r - 1) * (c - 1), 1 / (n * m), root=True))


def adjust(results: Iterable[TestResult]) -> None:
    """Set ``p_adjusted`` on every result with a p-value (Benjamini-Hochberg, one family)."""
    from scipy import stats

    tested = [r for r in results if r.p_value is not None]
    if tested:
        adjusted = stats.false_discovery_control([r.p_value for r in tested], method="bh")
        for result, q in zip(tested, adjusted):
            result.p_adjusted = float(q)


def drifts(results: Sequence[TestResult]) -> bool:
    """An effect size at or over its threshold with confidence, and a significant corrected p-value."""
    return any(r.exceeded for r in results) and any(
        r.p_adjusted is not None and r.p_adjusted < ALPHA for r in results
    )


DRIFT, NO_DRIFT, TOO_FEW, NOT_TESTED = "drift", "no drift", "too few rows to call", "not tested"


def verdict(results: Sequence[TestResult]) -> str:
    """``drift``; ``too few rows to call`` when an effect's interval still reaches its
    threshold; else ``no drift`` (``not tested`` without results)."""
    if not results:
        return NOT_TESTED
    if drifts(results):
        return DRIFT
    return TOO_FEW if any(r.undecided for r in results) else NO_DRIFT

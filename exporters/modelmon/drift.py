"""Drift statistics shared by ``modelmon report`` and ``modelmon skew --no-id``.

Every comparison gives a test statistic, a p-value where the test has one, and an
effect size with a documented threshold. At large samples every p-value is tiny, so
drift is decided on effect size, with significance as a guard against small-sample
noise: a comparison *drifts* when at least one of its effect sizes reaches its
threshold and at least one of its p-values, after the Benjamini-Hochberg correction
over the whole report, is below ``ALPHA``.

PSI and Jensen-Shannon are computed on the reference bins exactly as the Prometheus
recording rules do (shares floored at ``SHARE_FLOOR``, natural logarithm, no
renormalisation), so a report and a dashboard show the same numbers for the same
window. The statistical tests come from scipy, imported when a test runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from .metrics import ALERT_THRESHOLDS

# Empty shares are floored here before PSI, Jensen-Shannon and chi-square, as in the
# Prometheus rules' clamp_min(..., 1e-4) (prometheus/rules/*.rules.yml).
SHARE_FLOOR = 1e-4
ALPHA = 0.05  # false discovery rate of the Benjamini-Hochberg correction
MIN_SAMPLE = 20  # values a sample (or a group) needs before it is tested
CORRECTION = "benjamini-hochberg"

# Effect-size thresholds (at or above: the effect counts as drift).
THRESHOLDS: dict[str, float] = {
    "psi": ALERT_THRESHOLDS["ModelmonFeatureDrift"],  # 0.2, the alert's default
    "ks_d": 0.1,  # Kolmogorov-Smirnov D: largest gap between the two CDFs
    "wasserstein_sd": 0.1,  # Wasserstein distance in reference standard deviations
    "cramers_v": 0.1,  # Cramér's V; 0.1 is Cohen's "small" effect
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

    @property
    def threshold(self) -> float | None:
        return THRESHOLDS.get(self.effect)

    @property
    def exceeded(self) -> bool:
        return self.threshold is not None and self.effect_value is not None and self.effect_value >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "effect": self.effect,
            "effect_value": self.effect_value,
            "threshold": self.threshold,
            "exceeded": self.exceeded,
        }


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


def binned_tests(counts: Sequence[int], shares: Sequence[float], reference_rows: int, *,
                 chi_square: bool) -> list[TestResult]:
    """PSI, Jensen-Shannon and (if asked) the chi-square goodness-of-fit test of live
    counts per reference bin against the reference shares.

    PSI's p-value uses its sampling distribution, PSI ~ (1/n + 1/N) chi2(k - 1) for
    samples of n and N values on k bins (Yurdakul 2018). The chi-square test expects
    n times the floored, renormalised reference shares; its effect size is the
    goodness-of-fit form of Cramér's V, sqrt(chi2 / (n (k - 1))).
    """
    from scipy import stats

    c, s = _occupied(counts, shares)
    n, k = c.sum(), len(c)
    live = c / n
    results = []
    if chi_square and k > 1:
        expected = floored(s) / floored(s).sum() * n
        chi2, p = stats.chisquare(c, expected)
        results.append(TestResult("chi_square", float(chi2), float(p), "cramers_v", math.sqrt(chi2 / (n * (k - 1)))))
    value = psi(live, s)
    p_psi = float(stats.chi2.sf(value / (1 / n + 1 / reference_rows), k - 1)) if k > 1 else None
    results.append(TestResult("psi", value, p_psi, "psi", value))
    js = js_divergence(live, s)
    results.append(TestResult("jensen_shannon", js, None, "js_divergence", js))
    return results


def binned_ks(counts: Sequence[int], shares: Sequence[float]) -> TestResult:
    """Kolmogorov-Smirnov D on ordered bins (below, in-range bins, above): the largest gap
    between the live and reference CDFs at the reference's edges, a lower bound of the
    D on raw values. No p-value: the chi-square test on the same bins gives one."""
    c, s = np.asarray(counts, dtype=np.float64), np.asarray(shares, dtype=np.float64)
    d = float(np.max(np.abs(np.cumsum(c / c.sum()) - np.cumsum(s / s.sum()))))
    return TestResult("ks_binned", d, None, "ks_d", d)


def numeric_tests(reference: np.ndarray, live: np.ndarray, stddev: float | None) -> list[TestResult]:
    """Two-sample Kolmogorov-Smirnov and Wasserstein distance on raw finite values."""
    from scipy import stats

    ks = stats.ks_2samp(reference, live)
    distance = float(stats.wasserstein_distance(reference, live))
    normalised = distance / stddev if stddev else None
    return [
        TestResult("ks_2samp", float(ks.statistic), float(ks.pvalue), "ks_d", float(ks.statistic)),
        TestResult("wasserstein", distance, None, "wasserstein_sd", normalised),
    ]


def kruskal(groups: Sequence[np.ndarray]) -> TestResult:
    """Kruskal-Wallis H across groups; effect size epsilon squared, H / (n - 1)."""
    from scipy import stats

    h, p = stats.kruskal(*groups)
    n = sum(len(g) for g in groups)
    return TestResult("kruskal", float(h), float(p), "epsilon_squared", float(h / (n - 1)))


def independence(table: np.ndarray) -> TestResult:
    """Chi-square test of independence of a groups x categories table (no continuity
    correction); effect size Cramér's V."""
    from scipy import stats

    table = np.asarray(table, dtype=np.int64)
    table = table[:, table.sum(axis=0) > 0]
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    v = stats.contingency.association(table, method="cramer", correction=False)
    return TestResult("chi_square_independence", float(chi2), float(p), "cramers_v", float(v))


def adjust(results: Iterable[TestResult]) -> None:
    """Set ``p_adjusted`` on every result with a p-value (Benjamini-Hochberg, one family)."""
    from scipy import stats

    tested = [r for r in results if r.p_value is not None]
    if tested:
        adjusted = stats.false_discovery_control([r.p_value for r in tested], method="bh")
        for result, q in zip(tested, adjusted):
            result.p_adjusted = float(q)


def drifts(results: Sequence[TestResult]) -> bool:
    """An effect size at or over its threshold, and a significant corrected p-value."""
    return any(r.exceeded for r in results) and any(
        r.p_adjusted is not None and r.p_adjusted < ALPHA for r in results
    )

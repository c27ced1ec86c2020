"""Is a difference real? Paired statistics over seeds, computed with scipy.

A comparison pairs two configurations by seed (and by the evaluation settings), so each seed
gives one difference ``d_i = metric(configuration) - metric(reference)``; everything here works
on those ``n`` differences:

- the mean difference and its 95% confidence interval by bootstrap over the pairs
  (:func:`scipy.stats.bootstrap`, BCa, 9,999 resamples from a fixed generator: the same
  differences always give the same interval);
- the paired win rate (``p_improvement``): the share of seed pairs where the configuration is
  ahead, ties counting half. It is not rliable's probability of improvement, which compares every
  run of one configuration with every run of the other, unpaired;
- with at least :data:`MIN_SEEDS_FOR_TEST` pairs, the exact paired sign-flip permutation test
  (:func:`scipy.stats.permutation_test`, every sign pattern enumerated up to 2^16 of them), two-sided.
  With ``n`` pairs that all favour one side its p-value is 2 / 2^n, so fewer than 6 pairs can
  never reach p < 0.05: no test is run then;
- Holm's step-down adjustment over a family of p-values;
- what a design of ``n`` seeds can detect, and how many seeds a difference needs, also under Holm's
  correction over a family (:func:`seeds_for_family`);
- a rank correlation with its uncertainty (:func:`spearman`), or none claimed under
  :data:`MIN_POINTS_FOR_CORRELATION` points.

Nothing here imports torch or pandas.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

#: Fewer paired seeds than this cannot reach p < 0.05 with the exact sign-flip test (2 / 2^5 = 0.0625).
MIN_SEEDS_FOR_TEST = 6
#: The significance level of the tests and the confidence of the intervals (1 - ALPHA).
ALPHA = 0.05
#: Bootstrap resamples, and the seed of their generator (fixed: the same data, the same interval).
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
#: Up to this many pairs every sign pattern is enumerated (2^16 patterns); above, as many random ones.
EXACT_UP_TO = 16


@dataclass(frozen=True)
class PairedResult:
    """One comparison over ``n`` paired seeds; None where not applicable (``ci_*`` for n < 2,
    ``p_value`` for n < :data:`MIN_SEEDS_FOR_TEST`)."""

    n: int
    mean_diff: float
    ci_low: float | None
    ci_high: float | None
    p_improvement: float
    p_value: float | None


def compare_paired(diffs: Sequence[float], higher_is_better: bool = True) -> PairedResult:
    """The statistics of paired differences ``diffs`` [n] (configuration minus reference);
    ``higher_is_better`` says which sign is an improvement (False for an error such as MSE)."""
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1 or len(d) == 0 or not np.isfinite(d).all():
        raise ValueError(f"expected a non-empty 1-D array of finite differences, got {d!r}")
    low, high = bootstrap_interval(d) if len(d) >= 2 else (None, None)
    p_value = sign_flip_p_value(d) if len(d) >= MIN_SEEDS_FOR_TEST else None
    return PairedResult(len(d), float(d.mean()), low, high, probability_of_improvement(d, higher_is_better), p_value)


def bootstrap_interval(diffs: np.ndarray, confidence: float = 1 - ALPHA) -> tuple[float, float]:
    """The ``confidence`` interval of the mean of ``diffs`` [n >= 2] by bootstrap over the pairs
    (BCa; the percentile interval where BCa is undefined, e.g. n = 2); ``(d, d)`` when every
    difference is the same ``d``."""
    d = np.asarray(diffs, dtype=float)
    if np.ptp(d) == 0:
        return float(d[0]), float(d[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's warning on degenerate resamples: handled below
            result = stats.bootstrap((d,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=confidence,
                                     method=method, rng=np.random.default_rng(BOOTSTRAP_SEED))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    return float(d.min()), float(d.max())  # not reached with finite data; the widest honest answer


def probability_of_improvement(diffs: np.ndarray, higher_is_better: bool = True) -> float:
    """The share of pairs where the configuration is ahead, ties counting half."""
    d = np.asarray(diffs, dtype=float) * (1 if higher_is_better else -1)
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / len(d))


def sign_flip_p_value(diffs: np.ndarray) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of mean difference 0: exact (every
    one of the 2^n sign patterns) up to n = :data:`EXACT_UP_TO`, else from 2^16 random patterns."""
    d = np.asarray(diffs, dtype=float)
    resamples = np.inf if len(d) <= EXACT_UP_TO else 2 ** EXACT_UP_TO
    result = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=resamples,
                                    alternative="two-sided", vectorized=True,
                                    rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(min(1.0, result.pvalue))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values of a family (None entries are not tests and stay None):
    with the m tests' p sorted ascending, p_holm(i) = max over j <= i of min(1, (m - j + 1) p(j))."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def smallest_p_value(n: int) -> float:
    """The smallest two-sided p-value the exact sign-flip test can give with ``n`` pairs: 2 / 2^n."""
    return min(1.0, 2.0 ** (1 - n))


def seeds_for_family(m: int, alpha: float = ALPHA) -> int:
    """The fewest paired seeds with which any of a family of ``m`` exact sign-flip tests can reach
    ``p_holm < alpha``: Holm multiplies the smallest p-value by ``m``, and the smallest p-value of
    ``n`` pairs is 2 / 2^n (:func:`smallest_p_value`), so ``m * 2 / 2^n < alpha`` (6 for one test,
    8 for 6, 9 for 10, 10 for 24)."""
    n = MIN_SEEDS_FOR_TEST
    while max(1, m) * smallest_p_value(n) >= alpha:
        n += 1
    return n


def detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = 0.8) -> float | None:
    """The smallest mean paired difference that ``n`` pairs with a spread ``sd`` (the std of the
    differences) detect with probability ``power`` at level ``alpha``, by the paired t-test's
    approximation ``(t(1 - alpha/2, n-1) + t(power, n-1)) * sd / sqrt(n)``; None when ``n`` pairs
    cannot reach ``alpha`` with the exact sign-flip test at all (:func:`smallest_p_value`)."""
    if n < 2 or smallest_p_value(n) >= alpha:
        return None
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n))


def seeds_needed(sd: float, difference: float, alpha: float = ALPHA, power: float = 0.8,
                 limit: int = 10_000) -> int | None:
    """The fewest paired seeds whose :func:`detectable_difference` is at most ``difference``
    (at least :data:`MIN_SEEDS_FOR_TEST`); None above ``limit``."""
    def enough(n: int) -> bool:
        detectable = detectable_difference(sd, n, alpha, power)
        return detectable is not None and detectable <= difference

    low, high = MIN_SEEDS_FOR_TEST, limit
    if not enough(high):
        return None
    while low < high:  # the detectable difference falls as n grows
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle + 1, high)
    return low


#: Fewer points than this and no correlation is claimed: over 4 points a rank correlation is
#: exactly ±1 one time in 12 by chance alone, and its interval spans almost everything.
MIN_POINTS_FOR_CORRELATION = 5
#: Up to this many points every pairing of the two variables is enumerated (8! = 40,320).
EXACT_PAIRINGS_UP_TO = 8


@dataclass(frozen=True)
class Correlation:
    """Spearman's rank correlation of ``n`` points, its ``confidence`` interval and its two-sided
    permutation p-value (no monotone association)."""

    n: int
    rho: float
    ci_low: float
    ci_high: float
    p_value: float

    def text(self) -> str:
        """E.g. ``Spearman ρ = 0.62 [−0.10, 0.91], p = 0.11, n = 8``."""
        return (f"Spearman ρ = {self.rho:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}], p = {self.p_value:.2g}, "
                f"n = {self.n}").replace("-", "−")


def spearman(x: Sequence[float], y: Sequence[float], confidence: float = 1 - ALPHA) -> Correlation | None:
    """Spearman's rho of the paired points (``x``, ``y``), with its ``confidence`` interval by Fisher's
    z and Bonett & Wright's (2000) standard error sqrt((1 + rho²/2) / (n − 3)), and the two-sided
    permutation p-value (exact over every pairing up to :data:`EXACT_PAIRINGS_UP_TO` points, else
    9,999 random pairings from the fixed generator). None with fewer than
    :data:`MIN_POINTS_FOR_CORRELATION` points or a constant variable: no correlation is claimed."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(a)
    if n < MIN_POINTS_FOR_CORRELATION or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    ranks = stats.rankdata(a), stats.rankdata(b)

    def rank_pearson(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        u = u - u.mean(axis=axis, keepdims=True)
        v = v - v.mean(axis=axis, keepdims=True)
        return (u * v).sum(axis=axis) / np.sqrt((u * u).sum(axis=axis) * (v * v).sum(axis=axis))

    rho = float(rank_pearson(*ranks))
    z, se = math.atanh(max(-0.999999, min(0.999999, rho))), math.sqrt((1 + rho ** 2 / 2) / (n - 3))
    half = stats.norm.ppf(1 - (1 - confidence) / 2) * se
    resamples = np.inf if n <= EXACT_PAIRINGS_UP_TO else BOOTSTRAP_RESAMPLES
    # one sample permuted against the fixed other: n! pairings (scipy would permute both, (n!)^2)
    test = stats.permutation_test((ranks[1],), lambda v, axis=-1: rank_pearson(ranks[0], v, axis),
                                  permutation_type="pairings", n_resamples=resamples, alternative="two-sided",
                                  vectorized=True, batch=5040, rng=np.random.default_rng(BOOTSTRAP_SEED))
    return Correlation(n, rho, math.tanh(z - half), math.tanh(z + half), float(min(1.0, test.pvalue)))

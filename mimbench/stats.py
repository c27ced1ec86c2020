"""Is a difference real? Paired statistics over seeds, computed with scipy.

A comparison pairs two configurations by seed (and by the evaluation settings), so each seed
gives one difference ``d_i = metric(configuration) - metric(reference)``; everything here works
on those ``n`` differences:

- the mean difference and its 95% confidence interval (:func:`mean_interval`): Student's t with
  a shrunk Hall (1992) correction for skewness, a closed formula, so the same differences always
  give the same interval. It keeps its coverage at 3, 5 and 10 seeds (0.95 under normal seed
  noise, 0.95 to 0.96 under Student-t3 noise, 0.86 to 0.88 under lognormal noise; simulated in
  ``tests/test_coverage.py``, figures in ``benchmarks/README.md``). A bootstrap over so few
  pairs cannot: its interval never reaches beyond the differences observed (0.72 coverage at 3
  seeds, 0.84 to 0.91 at 10);
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
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

#: Fewer paired seeds than this cannot reach p < 0.05 with the exact sign-flip test (2 / 2^5 = 0.0625).
MIN_SEEDS_FOR_TEST = 6
#: The significance level of the tests and the confidence of the intervals (1 - ALPHA).
ALPHA = 0.05
#: Random permutations where a permutation test cannot enumerate them all, and the seed of their
#: generator (fixed: the same data, the same p-value). Their Monte Carlo error is at most
#: sqrt(0.25 / 9,999) = 0.005 on a p-value (0.002 near p = 0.05).
PERMUTATIONS = 9999
PERMUTATION_SEED = 0
#: Up to this many pairs every sign pattern is enumerated (2^16 patterns); above, as many random ones.
EXACT_UP_TO = 16
#: How the intervals are made, as captions and documents name them.
INTERVAL_METHOD = "t interval with a shrunk Hall skewness correction"
#: The share of the sample skewness that :func:`mean_interval` corrects for. The skewness of a
#: handful of values is wildly variable (of 3 values it is always near ±0.71, whatever the noise),
#: and the full correction then doubles the interval's width at 3 seeds; 0.6 of it keeps the
#: coverage (simulated, 100,000 trials: 0.95 under normal noise at 3, 5 and 10 seeds, 0.95 to 0.96
#: under Student-t3, 0.86 to 0.88 under lognormal(0, 1), where the plain t interval gives 0.82 to
#: 0.84) at a median width 1.15, 1.02 and 1.01 times the plain t interval's under normal noise.
SKEW_SHRINK = 0.6


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
    low, high = mean_interval(d) if len(d) >= 2 else (None, None)
    p_value = sign_flip_p_value(d) if len(d) >= MIN_SEEDS_FOR_TEST else None
    return PairedResult(len(d), float(d.mean()), low, high, probability_of_improvement(d, higher_is_better), p_value)


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 1 - ALPHA,
                  correct_skew: bool = True) -> tuple[float, float]:
    """The ``confidence`` interval of the mean of ``values`` [n >= 2]: Student's t interval with
    Hall's (1992, JRSS-B 54:221) transformation, which removes the first-order effect of skewness,
    applied with the sample skewness shrunk toward 0 (:data:`SKEW_SHRINK`).

    With mean ``m``, standard deviation ``s`` and (shrunk) skewness ``g`` of the values, the studentised
    mean ``D = (m - mu) / s`` is mapped through the monotone ``h(D) = D + g D^2/3 + g^2 D^3/27 +
    g/(6n)``; ``h(D) sqrt(n)`` is close to Student's t with n - 1 degrees of freedom, so the interval
    is ``m - s h^-1(±t / sqrt(n))``, with ``h^-1(y) = 3/g ((1 + g (y - g/(6n)))^(1/3) - 1)``. With
    ``g = 0`` (always so with 2 values), or ``correct_skew=False``, this is the textbook t interval.
    The correction is an expansion that holds near the usual quantiles, not in the far tail: a
    family-wise interval (confidence 1 - 0.05/m) is better served by the plain t interval, exact
    under normal noise (simulated at 3 normal seeds and confidence 1 - 0.05/20: 0.9975 plain,
    0.994 corrected). ``(v, v)`` when every value is the same ``v``."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if v.ndim != 1 or n < 2:
        raise ValueError(f"an interval needs at least 2 values, got {v!r}")
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    if sd == 0:
        return mean, mean
    centred = v - mean
    skew = SKEW_SHRINK * float((centred ** 3).mean() / (centred ** 2).mean() ** 1.5) if correct_skew else 0.0
    t = float(stats.t.ppf(1 - (1 - confidence) / 2, n - 1))

    def studentised(y: float) -> float:  # h^-1(y): the D whose transform is y
        if abs(skew) < 1e-12:
            return y
        return float(3 / skew * (np.cbrt(1 + skew * (y - skew / (6 * n))) - 1))

    return mean - sd * studentised(t / math.sqrt(n)), mean - sd * studentised(-t / math.sqrt(n))


@dataclass(frozen=True)
class OutcomeResult:
    """A comparison over per-image outcomes: ``n`` paired seeds of the same ``n_images`` test images."""

    n: int
    n_images: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float


def compare_outcomes(mine: np.ndarray, theirs: np.ndarray, confidence: float = 1 - ALPHA) -> OutcomeResult:
    """The accuracy difference of two configurations from their per-image outcomes, accounting for
    both the seeds and the finite test set: ``mine``, ``theirs`` bool [n, N], whether each of N
    test images (the same, in the same order) was classified right under each of n paired seeds.

    A two-level model ``d_si = mu + u_i + v_s + e_si`` of the per-image differences (``u``: the
    image, ``v``: the seed) gives ``Var(mean) ≈ s_seed^2 / n + s_image^2 / N``, with ``s_seed^2``
    the variance of the n per-seed accuracy differences and ``s_image^2`` that of the N per-image
    differences averaged over seeds (their shared ``e`` term is counted twice, which errs wide by
    ``Var(e) / (n N)``). The interval is ``mean ± t(n - 1) · SE`` and the two-sided p-value the
    t test's: the seeds' n - 1 degrees of freedom, not Welch–Satterthwaite's, which credit the
    image part's N - 1 and cover only 0.88 to 0.90 at 2 seeds (simulated). With one seed only the
    test set varies: ``t(N - 1)``, and the p-value is McNemar's exact test (a binomial test of the
    discordant images)."""
    a, b = np.asarray(mine, dtype=bool), np.asarray(theirs, dtype=bool)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 2:
        raise ValueError(f"expected two bool arrays [seeds, images] of one shape, got {a.shape} and {b.shape}")
    d = a.astype(float) - b.astype(float)
    n, images = d.shape
    per_seed = d.mean(axis=1)
    mean = float(per_seed.mean())
    image_part = float(d.mean(axis=0).var(ddof=1)) / images
    seed_part = float(per_seed.var(ddof=1)) / n if n > 1 else 0.0
    se = math.sqrt(seed_part + image_part)
    if se == 0:
        return OutcomeResult(n, images, mean, mean, mean, 1.0 if mean == 0 else 0.0)
    df = n - 1 if n > 1 else images - 1
    half = float(stats.t.ppf(1 - (1 - confidence) / 2, df)) * se
    if n == 1:
        ahead, behind = int((a & ~b).sum()), int((~a & b).sum())
        p_value = float(stats.binomtest(ahead, ahead + behind, 0.5).pvalue) if ahead + behind else 1.0
    else:
        p_value = float(2 * stats.t.sf(abs(mean) / se, df))
    return OutcomeResult(n, images, mean, mean - half, mean + half, p_value)


def interval_caption(fewest: int, most: int | None = None, images: int | None = None) -> str:
    """How a caption names the intervals of comparisons over ``fewest`` to ``most`` paired seeds,
    e.g. "95% t interval with a shrunk Hall skewness correction over 3 paired seeds"; with
    ``images``, where the runs kept their per-image outcomes on that many test images
    (:func:`compare_outcomes`)."""
    most = fewest if most is None else most
    if images:
        return (f"95% two-level t interval over {fewest if fewest == most else f'{fewest} to {most}'} paired "
                f"seed{'s' * (most != 1)} and the {images:,} test images (their per-image outcomes)")
    if most < 2:
        return "no interval: one seed per configuration (a spread needs 2)"
    seeds = f"{fewest} paired seeds" if fewest == most else f"{fewest} to {most} paired seeds"
    text = f"95% {INTERVAL_METHOD} over {seeds}"
    if fewest < 3:
        text += (f" (with 2 seeds it reaches t(0.975, 1) = {stats.t.ppf(0.975, 1):.1f} standard errors each side "
                 f"of the mean: wide, as 2 seeds warrant)")
    return text


def probability_of_improvement(diffs: np.ndarray, higher_is_better: bool = True) -> float:
    """The share of pairs where the configuration is ahead, ties counting half."""
    d = np.asarray(diffs, dtype=float) * (1 if higher_is_better else -1)
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / len(d))


def sign_flip_p_value(diffs: np.ndarray) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of mean difference 0: exact (every
    one of the 2^n sign patterns) up to n = :data:`EXACT_UP_TO`, else from 2^16 random patterns
    (Monte Carlo error at most 0.002, 0.001 near p = 0.05)."""
    d = np.asarray(diffs, dtype=float)
    resamples = np.inf if len(d) <= EXACT_UP_TO else 2 ** EXACT_UP_TO
    result = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=resamples,
                                    alternative="two-sided", vectorized=True,
                                    rng=np.random.default_rng(PERMUTATION_SEED))
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
    resamples = np.inf if n <= EXACT_PAIRINGS_UP_TO else PERMUTATIONS
    # one sample permuted against the fixed other: n! pairings (scipy would permute both, (n!)^2)
    test = stats.permutation_test((ranks[1],), lambda v, axis=-1: rank_pearson(ranks[0], v, axis),
                                  permutation_type="pairings", n_resamples=resamples, alternative="two-sided",
                                  vectorized=True, batch=5040, rng=np.random.default_rng(PERMUTATION_SEED))
    return Correlation(n, rho, math.tanh(z - half), math.tanh(z + half), float(min(1.0, test.pvalue)))

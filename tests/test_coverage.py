"""The report's intervals keep the coverage they state: a simulation of
:func:`mimbench.stats.compare_paired` at 3, 5 and 10 paired seeds under normal, heavy-tailed
(Student-t3) and skewed (lognormal) seed noise, and statistics that do not depend on a
generator's seed. The figures with more trials are in ``benchmarks/README.md``."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from scipy import optimize, stats as scipy_stats

from mimbench import stats

NOISE = {
    "normal": (lambda rng, size: rng.normal(size=size), 0.0, 0.92),
    "student-t3": (lambda rng, size: rng.standard_t(3, size=size), 0.0, 0.92),
    "lognormal": (lambda rng, size: rng.lognormal(0.0, 1.0, size=size), float(np.exp(0.5)), 0.84),
}


@pytest.mark.parametrize("noise", NOISE)
@pytest.mark.parametrize("n", (3, 5, 10))
def test_the_95_percent_interval_covers_the_true_mean(noise, n):
    draw, truth, floor = NOISE[noise]
    rng = np.random.default_rng(1000 + n)
    trials = 8000 if noise == "lognormal" else 3000
    hits = 0
    for _ in range(trials):
        result = stats.compare_paired(draw(rng, n) + 0.3)  # a true difference of truth + 0.3
        hits += result.ci_low <= truth + 0.3 <= result.ci_high
    assert hits / trials >= floor, f"{noise}, {n} seeds: coverage {hits / trials:.3f} < {floor}"


def test_the_interval_matches_an_independent_inversion_of_halls_transform():
    """The closed-form inverse against a numerical root of Hall's transform, written out here."""
    rng = np.random.default_rng(5)
    for n in (3, 4, 6, 10):
        for _ in range(20):
            d = rng.lognormal(0, 1, n) * rng.choice([-1, 1])
            mean, sd = d.mean(), d.std(ddof=1)
            skew = stats.SKEW_SHRINK * scipy_stats.skew(d, bias=True)
            t = scipy_stats.t.ppf(0.975, n - 1)

            def transform(x):
                return x + skew * x ** 2 / 3 + skew ** 2 * x ** 3 / 27 + skew / (6 * n)

            roots = [optimize.brentq(lambda x, y=y: transform(x) - y, -1e3, 1e3) for y in (t / np.sqrt(n), -t / np.sqrt(n))]
            low, high = stats.mean_interval(d)
            assert low == pytest.approx(mean - sd * roots[0], rel=1e-9, abs=1e-12)
            assert high == pytest.approx(mean - sd * roots[1], rel=1e-9, abs=1e-12)
            assert low <= mean <= high


def test_without_the_correction_it_is_the_textbook_t_interval():
    d = np.array([0.011, 0.024, 0.018, 0.031, 0.002])
    expected = scipy_stats.t.interval(0.99, len(d) - 1, loc=d.mean(), scale=scipy_stats.sem(d))
    assert stats.mean_interval(d, 0.99, correct_skew=False) == pytest.approx(expected, rel=1e-12)
    assert stats.mean_interval(d[:2]) == pytest.approx(scipy_stats.t.interval(0.95, 1, loc=d[:2].mean(),
                                                                              scale=scipy_stats.sem(d[:2])))


def test_nothing_depends_on_a_generators_seed_up_to_16_seeds_and_little_beyond():
    rng = np.random.default_rng(2)
    for n in (3, 6, 12, 16):
        d = rng.normal(0.3, 1.0, n)
        with mock.patch.object(stats, "PERMUTATION_SEED", 99):
            other = stats.compare_paired(d)
        assert other == stats.compare_paired(d)
    d = rng.normal(0.4, 1.0, 20)  # 2^16 random sign patterns: the p-value moves a little
    p_values = []
    for seed in range(4):
        with mock.patch.object(stats, "PERMUTATION_SEED", seed):
            p_values.append(stats.sign_flip_p_value(d))
    assert max(p_values) - min(p_values) < 0.015

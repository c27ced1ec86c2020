"""Coverage of the report's 95% intervals over paired seed differences, by simulation.

For each seed count and noise model, draws ``--trials`` sets of ``n`` differences with a known
mean and counts how often each interval contains it: the interval the report uses
(:func:`mimbench.stats.mean_interval`), the plain Student-t interval, full Hall correction, and
the BCa bootstrap the report used before (slow: ``--bootstrap-trials`` of them). Also how much
the sign-flip p-value moves with the generator's seed where it is not enumerated (n > 16).

    python benchmarks/coverage.py                 # about 2 minutes on 2 cores
    python benchmarks/coverage.py --trials 2000 --bootstrap-trials 0
"""

from __future__ import annotations

import argparse
import warnings
from unittest import mock

import numpy as np
from scipy import stats as scipy_stats

from mimbench import stats

NOISE = {
    "normal": (lambda rng, size: rng.normal(size=size), 0.0),
    "Student-t3": (lambda rng, size: rng.standard_t(3, size=size), 0.0),
    "lognormal(0, 1)": (lambda rng, size: rng.lognormal(0.0, 1.0, size=size), float(np.exp(0.5))),
}
SEEDS = (3, 5, 10)


def bca(values: np.ndarray) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = scipy_stats.bootstrap((values,), np.mean, n_resamples=9999, method="BCa",
                                       rng=np.random.default_rng(0)).confidence_interval
    return float(result.low), float(result.high)


def coverage(interval, draw, truth: float, n: int, trials: int, rng: np.random.Generator) -> tuple[float, float]:
    """(share of intervals that contain ``truth``, median width)."""
    hits, widths = 0, []
    for _ in range(trials):
        low, high = interval(draw(rng, n))
        hits += low <= truth <= high
        widths.append(high - low)
    return hits / trials, float(np.median(widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20000)
    parser.add_argument("--bootstrap-trials", type=int, default=400)
    args = parser.parse_args()
    methods = {
        "report (compare_paired)": lambda d: (lambda r: (r.ci_low, r.ci_high))(stats.compare_paired(d)),
        "plain t": lambda d: stats.mean_interval(d, correct_skew=False),
        "full Hall": lambda d: _full_hall(d),
    }
    print(f"| noise | method | {' | '.join(f'{n} seeds' for n in SEEDS)} |")
    print(f"|---|---|{'---|' * len(SEEDS)}")
    for noise, (draw, truth) in NOISE.items():
        rows = dict(methods)
        if args.bootstrap_trials:
            rows["BCa bootstrap"] = bca
        for name, interval in rows.items():
            trials = args.bootstrap_trials if name == "BCa bootstrap" else args.trials
            cells = []
            for n in SEEDS:
                share, width = coverage(interval, draw, truth, n, trials, np.random.default_rng(n))
                cells.append(f"{share:.3f} (width {width:.2f})")
            print(f"| {noise} | {name} ({trials:,} trials) | {' | '.join(cells)} |")
    print()
    rng = np.random.default_rng(1)
    moves = []
    for _ in range(50):
        d = rng.normal(0.5, 1.0, size=20)
        ps = []
        for seed in range(5):
            with mock.patch.object(stats, "PERMUTATION_SEED", seed):
                ps.append(stats.sign_flip_p_value(d))
        moves.append(max(ps) - min(ps))
    print(f"sign-flip p-value at n = 20 (2^16 random sign patterns) under 5 generator seeds, 50 data sets: "
          f"largest spread {max(moves):.4f}, median {np.median(moves):.4f}")


def _full_hall(d: np.ndarray) -> tuple[float, float]:
    with mock.patch.object(stats, "SKEW_SHRINK", 1.0):
        return stats.mean_interval(d)


if __name__ == "__main__":
    main()

"""How often agreement.csv's jackknife interval for Kendall's τ holds the τ of the true means (issue 32).

    python benchmarks/agreement_coverage.py               # 300 trials per cell, ~2 min on one core
    python benchmarks/agreement_coverage.py --trials 1000

Configurations with known mean scores under two probes (so a known τ between their orders), each
seed's score drawn around its mean with normal noise; each cell is the share of intervals
(``mimbench.report.agreement.kendall_with_interval``) that hold the true means' τ. The noise is
given relative to the gap between neighbouring configurations' means (0.1).
"""

from __future__ import annotations

import click
import numpy as np
import pandas as pd
from scipy import stats

from mimbench.report.agreement import kendall_with_interval

SETTINGS = {
    "5 configurations, τ = 0.6": {"a": (0.1, 0.3), "b": (0.2, 0.1), "c": (0.3, 0.4), "d": (0.4, 0.5), "e": (0.5, 0.6)},
    "3 configurations, τ = 1/3": {"a": (0.1, 0.2), "b": (0.2, 0.1), "c": (0.3, 0.3)},
}


def scores(means: dict[str, tuple[float, float]], seeds: int, noise: float, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame([{"config_id": c, "seed": s, "a": a + noise * rng.standard_normal(),
                          "b": b + noise * rng.standard_normal()} for c, (a, b) in means.items() for s in range(seeds)])


@click.command()
@click.option("--trials", default=300, show_default=True)
def main(trials: int) -> None:
    rng = np.random.default_rng(0)
    print("| configurations | noise / gap | 3 seeds | 5 seeds | 10 seeds |")
    print("|---|--:|--:|--:|--:|")
    for name, true in SETTINGS.items():
        target = stats.kendalltau([m[0] for m in true.values()], [m[1] for m in true.values()]).statistic
        for noise in (0.05, 0.1, 0.2, 0.4):
            cells = []
            for seeds in (3, 5, 10):
                held = [(lambda t: t[1] <= target <= t[2])(kendall_with_interval(scores(true, seeds, noise, rng), "a", "b"))
                        for _ in range(trials)]
                cells.append(f"{np.mean(held):.3f}")
            print(f"| {name} | {noise / 0.1:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

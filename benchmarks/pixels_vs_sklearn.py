"""Check the `pixels` baseline's linear probe against scikit-learn's LogisticRegression.

Both fit a multinomial logistic regression on the same standardised Fashion-MNIST pixels
(normalised as the core does, then standardised per pixel with the train split's statistics,
which is what the probe's affine-free BatchNorm computes). Target: within 1.5 points.

    pip install scikit-learn
    python benchmarks/pixels_vs_sklearn.py [--train-images 10000]
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.linear_model import LogisticRegression

from mimbench.data import Normalizer, to_device_images
from mimbench_plugins.datasets import fashion_mnist
from mimbench_plugins.probes import LinearProbe, standardize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=None, help="a fixed subset of the train split")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    train = to_device_images(fashion_mnist("train", train_images=args.train_images), 28, cpu)
    test = to_device_images(fashion_mnist("test"), 28, cpu)
    normalize = Normalizer.measure(train)
    train_x, test_x = normalize(train.images).flatten(1), normalize(test.images).flatten(1)
    print(f"Fashion-MNIST pixels: {len(train)} train / {len(test)} test, {train_x.shape[1]} features")

    probe = LinearProbe()
    started = time.perf_counter()
    ours, extras = probe.score(train_x, train.labels, test_x, test.labels, 10)
    print(f"mimbench linear probe (weight_decay {probe.weight_decay}): {ours:.4f} "
          f"({extras['linear_steps']} L-BFGS steps, {time.perf_counter() - started:.0f} s)")

    x, xt = (t.double().numpy() for t in standardize(train_x, test_x))
    y, yt = train.labels.numpy(), test.labels.numpy()
    for label, c in (("same penalty, C = 1 / (weight_decay * N)", 1 / (probe.weight_decay * len(y))),
                     ("scikit-learn's default C = 1", 1.0)):
        started = time.perf_counter()
        model = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        theirs = float((model.predict(xt) == yt).mean())
        print(f"scikit-learn LogisticRegression, {label}: {theirs:.4f} "
              f"({int(model.n_iter_.max())} iterations, {time.perf_counter() - started:.0f} s); "
              f"difference {100 * (ours - theirs):+.2f} points")


if __name__ == "__main__":
    main()

"""Built-in probes: how good a frozen (or fine-tuned) encoder is for classification.

``linear`` and ``knn`` read pooled features that the core extracts once per run
(``mimbench.probing.ProbeContext``); ``finetune`` trains a copy of the encoder.
All report top-1 accuracy on the test split as a fraction in [0, 1].

Each chooses its hyper-parameters among the grids its params give (one value is a grid of one)
on held-out train data, refits on the whole labelled train split and scores the test split once
(:mod:`mimbench.selection`); the chosen values are the ``<probe>_hp_<name>`` columns.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import TYPE_CHECKING, Annotated

import torch
import torch.nn.functional as F
from torch import nn

from mimbench.plugin import (Interval, Layer, MetricColumn, ProbeContext, accuracy_columns, autocast_for, check_layer,
                             hookimpl, layerwise, param_groups, selection, warmup_cosine)

if TYPE_CHECKING:
    from mimbench.data import Images

BatchSize = Annotated[int, Interval(ge=1, le=65_536)]
Neighbours = Annotated[int, Interval(ge=1, le=100_000)]


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of predicted labels [N] against labels [N], as an exact fraction."""
    return (predicted == labels).sum().item() / len(labels)


# ----------------------------------------------------------------------------- linear

def standardize(train: torch.Tensor, *others: torch.Tensor, eps: float = 1e-6) -> list[torch.Tensor]:
    """Scale features [N, D] to zero mean and unit variance per dimension, with the train split's
    statistics. This is what MAE's probe head ``BatchNorm1d(affine=False)`` computes at eval time."""
    mean, var = train.mean(0), train.var(0, unbiased=False)
    scale = (var + eps).rsqrt()
    return [(x - mean) * scale for x in (train, *others)]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float,
                 max_steps: int) -> tuple[nn.Linear, int]:
    """Multinomial logistic regression on x [N, D], y [N], by full-batch L-BFGS to convergence.

    Minimises mean cross-entropy + weight_decay / 2 * ||W||^2 (a convex problem, so the result
    does not depend on the seed) until the largest gradient entry is below 1e-4 or ``max_steps``
    iterations. Returns the layer and the L-BFGS iterations used. (scikit-learn's
    ``LogisticRegression(C=c)`` is the same problem with weight_decay = 1 / (c * N).)
    """
    head = nn.Linear(x.shape[1], num_classes).to(x.device)
    nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_steps, history_size=20,
                                  tolerance_grad=1e-4, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(head(x), y) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    steps = optimizer.state[head.weight]["n_iter"]
    return head.requires_grad_(False), steps


class LinearProbe:
    """Linear probe (MAE protocol): BatchNorm without affine, then a linear layer, fit to convergence.

    Trained on cached pooled features of the train split by full-batch L-BFGS with L2
    ``weight_decay`` (one value, or a grid chosen on held-out train data: ``linear_hp_weight_decay``);
    reports ``linear_acc`` on the test split and ``linear_steps``, the L-BFGS iterations of the
    final fit (``max_steps`` means it stopped before converging). ``layer``: ``last``
    (the encoder output), a block index, or ``all`` (see ``mimbench.probing.layerwise``).
    """

    def __init__(self, layer: Layer = "last", weight_decay: float | list[float] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
                 max_steps: Annotated[int, Interval(ge=1, le=10_000_000)] = 1000):
        check_layer(layer)
        self.weight_decays = selection.as_grid("weight_decay", weight_decay)
        if min(self.weight_decays) < 0 or max_steps < 1:
            raise ValueError(f"weight_decay must be >= 0 and max_steps >= 1, got {weight_decay}, {max_steps}")
        self.layer, self.max_steps = layer, max_steps

    def fit_predict(self, weight_decay: float, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                    num_classes: int) -> tuple[torch.Tensor, int]:
        """The predicted class of each test_x row [M] and the L-BFGS iterations, fit on train_x [N, D]."""
        train_x, test_x = standardize(train_x, test_x)
        with torch.enable_grad():
            head, steps = fit_logistic(train_x, train_y, num_classes, weight_decay, self.max_steps)
        return head(test_x).argmax(1), steps

    def score(self, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
              num_classes: int, seed: int = 0) -> tuple[float, dict[str, float], torch.Tensor]:
        chosen = selection.chosen_on_held_out(
            {"weight_decay": self.weight_decays}, train_y, seed,
            lambda hp, fit, held: self.fit_predict(hp["weight_decay"], train_x[fit], train_y[fit], train_x[held],
                                                   num_classes)[0])
        predicted, steps = self.fit_predict(chosen["weight_decay"], train_x, train_y, test_x, num_classes)
        return accuracy(predicted, test_y), {"linear_steps": steps, **selection.hp_values("linear", chosen)}, predicted

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        return layerwise(context, self.layer, "linear", functools.partial(self.score, seed=context.seed))

    def metric_columns(self) -> list[MetricColumn]:
        return accuracy_columns("linear_acc", "linear", self.layer) + selection.hp_columns("linear", ["weight_decay"],
                                                                                           "linear")


# ----------------------------------------------------------------------------- k-NN

@torch.no_grad()
def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Weighted k-NN on cosine similarity (Wu et al. 2018, as in DINO): each of the k most
    similar train features votes for its label with weight exp(similarity / temperature).

    train_x [N, D], train_y [N], test_x [M, D] -> predicted labels [M].
    """
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    k = min(k, train_x.shape[0])
    predictions = []
    for queries in test_x.split(chunk):
        similarity, index = (queries @ train_x.T).topk(k, dim=1)
        votes = torch.zeros(queries.shape[0], num_classes, device=queries.device)
        votes.scatter_add_(1, train_y[index], (similarity / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


class KNNProbe:
    """Weighted k-NN on cosine similarity of pooled features, votes weighted by exp(sim / T).

    Reports ``knn_acc`` on the test split, with the train split as the memory bank. ``k`` and
    ``temperature`` are each one value or a grid; the pair is chosen on held-out train data (the
    rest of the train split as the bank): ``knn_hp_k``, ``knn_hp_temperature``. ``layer`` as for ``linear``.
    """

    def __init__(self, layer: Layer = "last", k: Neighbours | list[Neighbours] = (5, 10, 20, 50),
                 temperature: float | list[float] = (0.02, 0.07, 0.2)):
        check_layer(layer)
        self.ks, self.temperatures = selection.as_grid("k", k), selection.as_grid("temperature", temperature)
        if not all(1 <= x <= 100_000 for x in self.ks) or min(self.temperatures) <= 0:
            raise ValueError(f"k must be in 1..100000 and temperature > 0, got k={k}, temperature={temperature}")
        self.layer = layer

    def score(self, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
              num_classes: int, seed: int = 0) -> tuple[float, dict[str, float], torch.Tensor]:
        chosen = selection.chosen_on_held_out(
            {"k": self.ks, "temperature": self.temperatures}, train_y, seed,
            lambda hp, fit, held: knn_predict(train_x[fit], train_y[fit], train_x[held], num_classes, **hp))
        predicted = knn_predict(train_x, train_y, test_x, num_classes, **chosen)
        return accuracy(predicted, test_y), selection.hp_values("knn", chosen), predicted

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        return layerwise(context, self.layer, "knn", functools.partial(self.score, seed=context.seed))

    def metric_columns(self) -> list[MetricColumn]:
        return (accuracy_columns("knn_acc", "kNN", self.layer, latex="$k$-NN")
                + selection.hp_columns("knn", ["k", "temperature"], "kNN"))


# ----------------------------------------------------------------------------- fine-tuning

def layer_decayed_groups(encoder: nn.Module, head: nn.Module, lr: float, layer_decay: float,
                         weight_decay: float) -> list[dict]:
    """AdamW groups with layer-wise lr decay (BEiT): a parameter at depth d of an encoder with
    depth D gets lr * layer_decay**(D + 1 - d); the head gets lr. Depths come from the encoder's
    optional ``param_depths() -> (dict[param name, depth], D)``; without it every encoder
    parameter gets lr * layer_decay."""
    depths, total = encoder.param_depths() if hasattr(encoder, "param_depths") else ({}, 0)
    groups = []
    for name, p in encoder.named_parameters():
        scale = layer_decay ** (total + 1 - depths.get(name, total))
        groups.append({"params": [p], "lr": lr * scale, "weight_decay": weight_decay if p.ndim >= 2 else 0.0})
    for group in param_groups([head], weight_decay):
        groups.append({**group, "lr": lr})
    for group in groups:
        group["initial_lr"] = group["lr"]
    return groups


class FineTuneProbe:
    """End-to-end fine-tuning of a copy of the encoder plus a linear head (opt-in: costly).

    The head (LayerNorm, then linear, as MAE's) reads the pooled output; training uses AdamW, warm-up + cosine lr, layer-wise lr
    decay and horizontal flips (``flip``); reports ``finetune_acc``. ``lr`` is one value or a grid
    chosen on held-out train data (``finetune_hp_lr``): each candidate is one more fine-tuning on
    the rest of the train split.

    It trains the whole encoder, so suites opt in. On the ``random-init`` baseline it
    is training from scratch with the same budget. Encoders without parameters (``pixels``)
    are skipped.
    """

    def __init__(self, epochs: Annotated[int, Interval(ge=1, le=10_000)] = 5,
                 lr: float | list[float] = (5e-4, 1e-3, 2e-3), layer_decay: float = 0.75,
                 weight_decay: float = 0.05, batch_size: BatchSize = 128, warmup_epochs: float = 1.0, flip: bool = True,
                 min_steps: Annotated[int, Interval(ge=0, le=10_000_000)] = 0):
        self.lrs = selection.as_grid("lr", lr)
        if epochs < 1 or min(self.lrs) <= 0 or not 0 < layer_decay <= 1 or batch_size < 1 or warmup_epochs < 0 \
                or min_steps < 0:
            raise ValueError("finetune needs epochs >= 1, lr > 0, 0 < layer_decay <= 1, batch_size >= 1, "
                             "warmup_epochs >= 0, min_steps >= 0")
        self.epochs, self.layer_decay, self.weight_decay = epochs, layer_decay, weight_decay
        self.batch_size, self.warmup_epochs, self.flip = batch_size, warmup_epochs, flip
        # with few labels an epoch is a step or two: train for at least this many steps (more epochs)
        self.min_steps = min_steps

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        if not any(True for _ in context.encoder.parameters()):
            return {}
        labels = context.train.all_labels().to(context.device)
        chosen = selection.chosen_on_held_out(
            {"lr": self.lrs}, labels, context.seed,
            lambda hp, fit, held: _predictions(*self.train(context, context.train.subset(fit), hp["lr"]),
                                               context.train.subset(held), context))
        predicted = _predictions(*self.train(context, context.train, chosen["lr"]), context.test, context)
        context.keep_predictions("finetune_acc", predicted)
        accuracy_ = (predicted == context.test.all_labels().cpu()).sum().item() / len(context.test)
        return {"finetune_acc": accuracy_, **selection.hp_values("finetune", chosen)}

    def train(self, context: ProbeContext, data: Images, lr: float) -> tuple[nn.Module, nn.Module]:
        """A fine-tuned copy of the encoder and its head, trained on ``data`` with peak lr ``lr``."""
        device, normalize = context.device, context.normalize
        encoder = copy.deepcopy(context.encoder).to(device).train()
        # MAE's fine-tuning head on pooled features: LayerNorm (fc_norm), then linear. The norm
        # matters: pooled features of a CNN can vary by ~1% of their mean across images.
        linear = nn.Linear(encoder.out_dim, context.num_classes)
        nn.init.trunc_normal_(linear.weight, std=0.01), nn.init.zeros_(linear.bias)
        head = nn.Sequential(nn.LayerNorm(encoder.out_dim), linear).to(device)
        optimizer = torch.optim.AdamW(layer_decayed_groups(encoder, head, lr, self.layer_decay, self.weight_decay))
        batch_size = min(self.batch_size, len(data))
        steps_per_epoch = len(data) // batch_size
        epochs = max(self.epochs, -(-self.min_steps // steps_per_epoch))
        total = steps_per_epoch * epochs
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, round(self.warmup_epochs * steps_per_epoch), total))
        generator = torch.Generator(device=device).manual_seed(context.seed)
        with torch.enable_grad():
            for _ in range(epochs):
                for batch, labels in data.batches(batch_size, generator):
                    images = normalize(batch)
                    if self.flip:
                        flipped = torch.rand(len(labels), generator=generator, device=device) < 0.5
                        images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
                    with autocast_for(device):
                        logits = head(encoder(images).mean(dim=(2, 3)))
                    loss = F.cross_entropy(logits.float(), labels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
        final_loss = loss.item()
        if not math.isfinite(final_loss):
            raise FloatingPointError(f"finetune diverged (final loss {final_loss}, lr {lr})")
        return encoder, head

    def metric_columns(self) -> list[MetricColumn]:
        return (accuracy_columns("finetune_acc", "fine-tune", trains_encoder=True)
                + selection.hp_columns("finetune", ["lr"], "fine-tune"))


@torch.no_grad()
def _predictions(encoder: nn.Module, head: nn.Module, data: Images, context: ProbeContext) -> torch.Tensor:
    """The predicted class of every image of ``data``, in its order, [len(data)] (on the CPU)."""
    encoder.eval()
    predicted = []
    for images, _ in data.batches(context.batch_size):
        with autocast_for(context.device):
            logits = head(encoder(context.normalize(images)).mean(dim=(2, 3)))
        predicted.append(logits.argmax(1).cpu())
    return torch.cat(predicted)


@hookimpl
def mimbench_register_probes(register) -> None:
    register("linear", LinearProbe)
    register("knn", KNNProbe)
    register("finetune", FineTuneProbe)

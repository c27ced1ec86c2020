"""What a probe gets: the frozen encoder, labelled data, and features extracted once per run.

Features are the encoder's feature grid on *unmasked* normalised images, mean-pooled over
the grid: Tensor[N, D]. They are extracted on the device in batches, the first time a
probe asks for them, and shared by every probe of the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Callable

from annotated_types import Interval

import torch
from torch import nn

from mimbench.data import Images, Normalizer
from mimbench.optim import autocast_for
from mimbench.protocols import capability
from mimbench.selection import held_out_split

#: Which features a probe reads: the encoder's output, one block (0-based) or every block.
#: A probe's ``layer`` param: a block index (0..1023, checked against the encoder before training), ``"last"`` or ``"all"``.
Layer = Annotated[int, Interval(ge=0, le=1023)] | str


class RawPixels(nn.Module):
    """The ``pixels`` baseline as an encoder: the normalised image itself, flattened.

    ``forward(images [B, C, H, W]) -> [B, C*H*W, 1, 1]``, so that mean-pooling the
    1 x 1 grid gives the flat pixel vector. It has no blocks and no parameters.
    """

    def __init__(self, in_channels: int, image_size: int):
        super().__init__()
        self.out_dim, self.stride = in_channels * image_size * image_size, image_size

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return images.flatten(1)[:, :, None, None]

    def dense_grid(self, images: torch.Tensor) -> torch.Tensor:
        """For dense probes: each ``DENSE_PIXEL_PATCH`` px square's raw pixels as its feature,
        [B, C * p * p, H / p, W / p] (p = 1 when it does not divide the image)."""
        p = DENSE_PIXEL_PATCH if images.shape[-1] % DENSE_PIXEL_PATCH == 0 else 1
        return torch.nn.functional.pixel_unshuffle(images, p)


#: The side of the squares whose raw pixels are the ``pixels`` baseline's feature grid for dense
#: probes: the patch of the packaged ViTs, so that the baseline's grid is as fine as theirs.
DENSE_PIXEL_PATCH = 4


@dataclass
class Features:
    """Pooled features of both splits, ``train`` Tensor[N, D] and ``test`` Tensor[M, D] (float32),
    with their labels ``train_labels`` [N] and ``test_labels`` [M]."""

    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    test_labels: torch.Tensor


@dataclass
class ProbeContext:
    """Everything a probe may use. ``train``/``test`` are the labelled probe splits, read as uint8
    batches on the device with ``batches(batch_size, generator=None)``; ``normalize`` is the
    pre-training normalisation the encoder was trained with; ``features(layer)`` are cached."""

    encoder: nn.Module
    train: Images
    test: Images
    normalize: Normalizer
    device: torch.device
    seed: int
    batch_size: int = 512
    # save_picture(name, image float [3, H, W] in [0, 1]): a picture for the report, as the run's
    # <name>.png (``segmentations``: the dense probes' figure); None where there is no run folder
    save_picture: Callable[[str, torch.Tensor], None] | None = None
    # save_json(name, document): a probe's file for the run folder, as <name>.json (the detection
    # probe's detections.json and detections_gt.json); None where there is no run folder
    save_json: Callable[[str, object], None] | None = None
    #: The predicted class of every test image behind an accuracy column, by column, kept with
    #: :meth:`keep_predictions` and written to the run's ``predictions.npz``.
    predictions: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _cache: dict[str, object] = field(default_factory=dict, repr=False)

    def keep_predictions(self, column: str, predicted: torch.Tensor) -> None:
        """Keep the predicted class of every test image [len(test)] (int) behind the accuracy
        ``column``: the run folder's per-image outcomes, for paired per-image tests."""
        if predicted.shape != (len(self.test),):
            raise ValueError(f"{column}: expected one prediction per test image, shape ({len(self.test)},), "
                             f"got {tuple(predicted.shape)}")
        self.predictions[column] = predicted.detach().to("cpu", torch.int64)

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def has_blocks(self) -> bool:
        return capability("encoder", self.encoder, "blocks") is not None

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor] | None:
        """Each block's attention over the patch tokens of normalised, unmasked ``images`` [B, C, H, W],
        float [B, heads, T, T] per block (the encoder's ``attention_maps``), or None for an encoder
        without attention (a CNN, the pixels baseline)."""
        maps = capability("encoder", self.encoder, "attention_maps")
        if maps is None:
            return None
        self.encoder.eval()
        return [attention.float() for attention in maps(images)]

    def features(self, layer: Layer = "last") -> Features:
        """Pooled features of the encoder's output (``"last"``) or of block ``layer`` (an int)."""
        if layer == "last":
            if "last" not in self._cache:
                self._cache["last"] = self._last_block_if_output() or self._extract(lambda x: [self.encoder(x)])[0]
            return self._cache["last"]  # type: ignore[return-value]
        if not self.has_blocks:  # e.g. the pixels baseline: its output is its only block
            return self.features("last")
        blocks = self.block_features()
        check_block_index(layer, len(blocks))
        return blocks[layer]

    def block_features(self) -> list[Features]:
        """Pooled features after each block (one pass over the data for all blocks).

        An encoder without ``blocks()`` counts as a single block: its output."""
        if "blocks" not in self._cache:
            if self.has_blocks:
                self._cache["blocks"] = self._extract(self.encoder.blocks)
            else:
                self._cache["blocks"] = [self.features("last")]
        return self._cache["blocks"]  # type: ignore[return-value]

    def dense(self, split: str, layer: int | str = "last") -> tuple[torch.Tensor, torch.Tensor]:
        """The feature grids of a split's unmasked images, float16 [N, D, h, w] (:meth:`grids`), with
        its segmentation masks uint8 [N, S, S] (255: ignored); ``layer``: ``"last"`` or a block index.
        ValueError when the split has no masks."""
        data = self.train if split == "train" else self.test
        if data.masks is None:
            raise ValueError(f"the {split} split has no segmentation masks (a dense probe needs a dataset "
                             f"that carries them, e.g. fashion-mosaic, held on the device)")
        if f"masks/{split}" not in self._cache:
            self._cache[f"masks/{split}"] = torch.cat([masks for _, masks in data.mask_batches(self.batch_size)])
        return self.grids(split, layer), self._cache[f"masks/{split}"]  # type: ignore[return-value]

    def boxes(self, split: str) -> torch.Tensor:
        """A split's objects, float [N, M, 5] (class, x0, y0, x1, y1) in pixels, class -1 padding
        (:class:`~mimbench.data.TensorImageDataset`); ValueError when the split has none."""
        data = self.train if split == "train" else self.test
        if data.boxes is None:
            raise ValueError(f"the {split} split has no boxes (a detection probe needs a dataset that carries "
                             f"them, e.g. fashion-mosaic, held on the device)")
        return data.boxes

    @torch.no_grad()
    def grids(self, split: str, layer: int | str = "last") -> torch.Tensor:
        """The feature grids of a split's unmasked images, float16 [N, D, h, w], in the split's order:
        the encoder's output (``"last"``) or block ``layer``'s (every block's in one pass). Extracted
        once per run and shared by the probes that read tokens (attentive, dense); float16 halves
        what they hold (a 64-d grid of 7 x 7 tokens is 6 kB per image)."""
        key = f"grid/{split}/{layer}"
        if key not in self._cache:
            data = self.train if split == "train" else self.test
            by_block = layer != "last" and self.has_blocks and not isinstance(self.encoder, RawPixels)
            self.encoder.eval()
            chunks: list[list[torch.Tensor]] = []
            for batch, _ in data.batches(self.batch_size):
                images = self.normalize(batch)
                with autocast_for(self.device):
                    outputs = self.encoder.blocks(images) if by_block else [dense_grid(self.encoder, images)]
                chunks.append([grid.to(torch.float16) for grid in outputs])
            if by_block:
                self._cache["block_count"] = len(chunks[0])
                check_block_index(layer, len(chunks[0]))
            for i, per_layer in enumerate(zip(*chunks)):
                self._cache[f"grid/{split}/{i}" if by_block else key] = torch.cat(per_layer)
        return self._cache[key]  # type: ignore[return-value]

    def token_features(self, layer: Layer = "last") -> Features:
        """The tokens of both splits, float16 ``train`` [N, T, D] and ``test`` [M, T, D] (T = h * w:
        the :meth:`grids` flattened), with their labels."""
        train, test = (self.grids(split, layer).flatten(2).transpose(1, 2) for split in ("train", "test"))
        return Features(train, test, self.train.all_labels().to(train.device), self.test.all_labels().to(test.device))

    def block_token_features(self) -> list[Features]:
        """:meth:`token_features` of every block (an encoder without blocks: its output only)."""
        if not self.has_blocks or isinstance(self.encoder, RawPixels):
            return [self.token_features("last")]
        self.grids("train", 0)  # every block in one pass
        return [self.token_features(i) for i in range(self._cache["block_count"])]  # type: ignore[call-overload]

    @torch.no_grad()
    def _last_block_if_output(self) -> Features | None:
        """The last block's features when they are already extracted and the encoder's output
        equals its last block (checked on one batch), to save a pass over the data."""
        if "blocks" not in self._cache or not self.has_blocks:
            return None
        images = self.normalize(next(self.train.batches(self.batch_size))[0])
        with autocast_for(self.device):
            same = torch.allclose(self.encoder(images).float(), self.encoder.blocks(images)[-1].float(),
                                  rtol=1e-4, atol=1e-5)
        return self._cache["blocks"][-1] if same else None  # type: ignore[index]

    @torch.no_grad()
    def _extract(self, grids: Callable[[torch.Tensor], list[torch.Tensor]]) -> list[Features]:
        self.encoder.eval()
        splits, labels = [], []
        for data in (self.train, self.test):
            chunks: list[list[torch.Tensor]] = []
            label_chunks = []
            for batch, batch_labels in data.batches(self.batch_size):
                with autocast_for(self.device):
                    outputs = grids(self.normalize(batch))
                chunks.append([grid.float().mean(dim=(2, 3)) for grid in outputs])
                label_chunks.append(batch_labels)
            splits.append([torch.cat(per_layer) for per_layer in zip(*chunks)])
            labels.append(torch.cat(label_chunks))
        return [Features(train, test, *labels) for train, test in zip(*splits)]


def dense_grid(encoder: nn.Module, images: torch.Tensor, layer: int | str = "last") -> torch.Tensor:
    """An encoder's feature grid for dense probes: its ``dense_grid`` when it has one (the pixels
    baseline), else its output (``"last"``) or block ``layer``'s grid, [B, D, h, w]."""
    if isinstance(encoder, RawPixels):
        return encoder.dense_grid(images)
    if layer == "last" or capability("encoder", encoder, "blocks") is None:
        return encoder(images)
    blocks = encoder.blocks(images)
    check_block_index(layer, len(blocks))
    return blocks[layer]


#: score(train_x [N, D], train_y [N], eval_x [M, D], eval_y [M], num_classes) -> (accuracy, extras),
#: or (accuracy, extras, predicted class [M]) to keep the per-image outcomes too
Score = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int],
                 tuple[float, dict[str, float]] | tuple[float, dict[str, float], torch.Tensor]]


def layerwise(context: ProbeContext, layer: Layer, prefix: str, score: Score,
              validation_fraction: float = 0.1, tokens: bool = False) -> dict[str, float]:
    """Run ``score`` on the features ``layer`` names and return ``<prefix>_acc`` (+ extras).

    ``score`` reads pooled features [N, D], or with ``tokens`` the token grids [N, T, D] (float16,
    :meth:`ProbeContext.token_features`).

    - ``"last"``: the encoder's output -> ``<prefix>_acc``.
    - an int ``i``: block i -> ``<prefix>_acc`` and ``<prefix>_acc@i``.
    - ``"all"``: every block i -> ``<prefix>_acc@i``; the output -> ``<prefix>_acc``; and the
      block chosen on a held-out ``validation_fraction`` of the *train* split (never on test)
      -> ``<prefix>_best_block`` and its test accuracy ``<prefix>_acc_best``.

    Where ``score`` also returns the predicted classes, they are kept for ``<prefix>_acc`` and
    ``<prefix>_acc_best`` (:meth:`ProbeContext.keep_predictions`).
    """
    classes = context.num_classes

    def run(features: Features) -> tuple[float, dict[str, float], torch.Tensor | None]:
        accuracy, extras, *predicted = score(features.train, features.train_labels, features.test,
                                             features.test_labels, classes)
        return accuracy, extras, predicted[0] if predicted else None

    features_of = context.token_features if tokens else context.features
    if layer == "all":
        blocks = context.block_token_features() if tokens else context.block_features()
        result: dict[str, float] = {}
        validation: list[float] = []
        per_block: list[torch.Tensor | None] = []
        train_y = blocks[0].train_labels
        keep, held_out = held_out_split(len(train_y), context.seed, train_y.device, validation_fraction)
        for i, features in enumerate(blocks):
            result[f"{prefix}_acc@{i}"], _, predicted = run(features)
            per_block.append(predicted)
            validation.append(score(features.train[keep], train_y[keep], features.train[held_out],
                                    train_y[held_out], classes)[0])
        best = max(range(len(blocks)), key=lambda i: validation[i])
        accuracy, extras, predicted = run(features_of("last"))
        for column, kept in ((f"{prefix}_acc", predicted), (f"{prefix}_acc_best", per_block[best])):
            if kept is not None:
                context.keep_predictions(column, kept)
        return {f"{prefix}_acc": accuracy, **extras, **result,
                f"{prefix}_best_block": best, f"{prefix}_acc_best": result[f"{prefix}_acc@{best}"]}
    accuracy, extras, predicted = run(features_of(layer))
    if predicted is not None:
        context.keep_predictions(f"{prefix}_acc", predicted)
    columns = {f"{prefix}_acc": accuracy, **extras}
    if isinstance(layer, int):
        columns[f"{prefix}_acc@{layer}"] = accuracy
    return columns


def channel_stats(features: torch.Tensor, channel_dim: int, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased std of ``features`` (any float dtype, e.g. float16 grids
    [N, D, h, w] with ``channel_dim`` 1, or tokens [N, T, D] with -1) over every other dim, summed in
    float64 a chunk of dim 0 at a time: float32, shaped to broadcast against ``features``; std >= 1e-6."""
    channel_dim %= features.ndim
    dims = tuple(d for d in range(features.ndim) if d != channel_dim)
    total = torch.zeros(features.shape[channel_dim], dtype=torch.float64, device=features.device)
    squares = torch.zeros_like(total)
    for x in features.split(chunk):
        x = x.double()
        total += x.sum(dim=dims)
        squares += x.square().sum(dim=dims)
    count = features.numel() // features.shape[channel_dim]
    mean = total / count
    std = ((squares - count * mean.square()) / max(1, count - 1)).clamp_min(0).sqrt().clamp_min(1e-6)
    shape = [1] * features.ndim
    shape[channel_dim] = -1
    return mean.float().view(shape), std.float().view(shape)


def check_block_index(layer: Layer, count: int, encoder: str = "this encoder") -> None:
    """Raise ValueError unless ``layer`` is a block index in 0..count-1 of ``encoder``."""
    if not isinstance(layer, int) or not 0 <= layer < count:
        raise ValueError(f"layer {layer!r}: {encoder} has {count} block{'s' if count != 1 else ''} "
                         f"(0..{count - 1})")


def check_layer(layer: Layer) -> None:
    """Raise ValueError unless ``layer`` is ``"last"``, ``"all"`` or an int block index."""
    if not (layer in ("last", "all") or (isinstance(layer, int) and not isinstance(layer, bool) and layer >= 0)):
        raise ValueError(f"layer must be 'last', 'all' or a block index (int >= 0), got {layer!r}")

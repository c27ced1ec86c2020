"""Reconstruction metrics: small pure functions on [0, 1] pixel-space tensors.

pred, target: float Tensor[B, C, H, W] in [0, 1]; mask: bool Tensor[B, H, W], True = hidden.
Only hidden pixels count; every channel of a hidden pixel counts.
"""

from __future__ import annotations

import torch

#: PSNR of a perfect reconstruction would be infinite; MSE is floored here (100 dB).
MSE_FLOOR = 1e-10


def hidden_squared_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: (sum of squared errors over hidden values [B], number of hidden values [B])."""
    weight = mask.unsqueeze(1).to(torch.float64)
    squared = (pred.double() - target.double()).pow(2) * weight
    return squared.sum(dim=(1, 2, 3)), weight.sum(dim=(1, 2, 3)) * pred.shape[1]


def psnr(mse: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """10 * log10(max_value^2 / mse), elementwise, with mse floored at MSE_FLOOR."""
    return 10.0 * torch.log10(max_value**2 / mse.clamp_min(MSE_FLOOR))


def mask_avgdist(mask: torch.Tensor, max_elements: int = 1 << 22) -> torch.Tensor:
    """SimMIM's AvgDist per image: bool mask [B, H, W] (True = hidden) -> float64 Tensor[B].

    For each image, the mean over hidden pixels of the Euclidean distance, in pixels, from the
    pixel to the nearest visible pixel of the same image; NaN for an image with no hidden pixel
    or no visible pixel. Exact, by a separable Euclidean distance transform vectorised over the
    batch: first, along each row, the distance g to the nearest visible pixel of that row
    (running max / min of visible column indices); then, in each column, d^2[y] = min over
    rows y' of g[y']^2 + (y - y')^2, taking |y - y'| = 1, 2, ... and dropping a column once
    (y - y')^2 passes its largest d^2 so far: the cost grows with the distances, not the height.
    Images go in chunks of at most ``max_elements`` pixels to bound memory.
    """
    if mask.ndim != 3:
        raise ValueError(f"mask must be [B, H, W], got shape {tuple(mask.shape)}")
    hidden = mask.bool()
    b, h, w = hidden.shape
    chunk = max(1, max_elements // max(1, h * w))
    if b > chunk:
        return torch.cat([mask_avgdist(hidden[i:i + chunk], max_elements) for i in range(0, b, chunk)])
    visible = ~hidden
    any_visible = visible.flatten(1).any(dim=1)
    counts = hidden.flatten(1).sum(dim=1)
    cols = torch.arange(w, device=hidden.device, dtype=torch.float32).expand(b, h, w)
    inf = torch.tensor(float("inf"), device=hidden.device)
    before = torch.where(visible, cols, -inf).cummax(dim=2).values  # last visible column at or left of x
    after = torch.where(visible, cols, inf).flip(2).cummin(dim=2).values.flip(2)  # first one at or right of x
    g2 = torch.minimum(cols - before, after - cols).square()  # inf in rows with nothing visible
    g2[~any_visible] = 0.0  # those images get NaN; keep them from holding the loop below
    g2 = g2.transpose(1, 2).reshape(b * w, h)  # one row per image column
    d2 = torch.empty_like(g2)
    left = torch.arange(b * w, device=hidden.device)  # the columns still being refined
    sub_g2, sub_d2 = g2, g2.clone()
    for dy in range(1, h):
        if dy % 4 == 1:  # drop the columns that no row further away can bring closer (a host sync)
            d2[left] = sub_d2
            need = sub_d2.amax(dim=1) > dy * dy
            left, sub_g2, sub_d2 = left[need], sub_g2[need], sub_d2[need]
            if left.numel() == 0:
                break
        for near, far in ((sub_d2[:, dy:], sub_g2[:, :-dy]), (sub_d2[:, :-dy], sub_g2[:, dy:])):
            torch.minimum(near, far + dy * dy, out=near)
    d2[left] = sub_d2
    dist = d2.view(b, w, h).transpose(1, 2).sqrt()
    total = torch.where(hidden, dist, 0.0).double().flatten(1).sum(dim=1)
    return torch.where((counts > 0) & any_visible, total / counts, torch.nan)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, classes: int, ignore_index: int = 255) -> torch.Tensor:
    """int64 [classes, classes] counts, row = true class, column = predicted, over every pixel of
    ``pred`` and ``target`` (int tensors of one shape) whose true class is not ``ignore_index``."""
    keep = target != ignore_index
    index = target[keep].long() * classes + pred[keep].long()
    return torch.bincount(index, minlength=classes * classes).view(classes, classes)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float]:
    """mIoU and pixel accuracy from a confusion matrix (rows true, columns predicted).

    IoU of a class = TP / (TP + FP + FN). A class that is neither in the ground truth nor predicted
    has no IoU and is left out of the mean; a class predicted but absent from the ground truth has
    IoU 0 and counts (as in mmsegmentation and the Pascal VOC devkit). Pixel accuracy = correct /
    labelled pixels. Returns ``miou``, ``pixel_acc`` and ``classes_scored`` (how many IoUs the mean has)."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    scored = union > 0
    iou = tp[scored] / union[scored]
    total = confusion.sum()
    return {"miou": iou.mean().item() if scored.any() else float("nan"),
            "pixel_acc": (tp.sum() / total).item() if total > 0 else float("nan"),
            "classes_scored": int(scored.sum())}


#: SSIM's constants (Wang et al. 2004): a Gaussian window of std 1.5 truncated at 3.5 std (11 taps),
#: K1 = 0.01, K2 = 0.03, for images in [0, 1].
SSIM_SIGMA, SSIM_RADIUS, SSIM_K1, SSIM_K2 = 1.5, 5, 0.01, 0.03


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean structural similarity of each image pair (Wang et al. 2004), float64 Tensor[B].

    pred, target: [B, C, H, W] in [0, 1], H and W > 10. Local means, variances and covariance
    under an 11 x 11 Gaussian window (std 1.5, population moments), SSIM at every position whose
    window lies inside the image, averaged over those positions and the channels: what
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` computes.
    """
    x, y = pred.double(), target.double()
    channels = x.shape[1]
    taps = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64, device=x.device)
    window = torch.exp(-taps.square() / (2 * SSIM_SIGMA**2))
    window = (window / window.sum()).view(1, 1, -1)
    kernel = (window.transpose(1, 2) @ window).expand(channels, 1, -1, -1)  # [C, 1, 11, 11]

    def local_mean(image: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(image, kernel, groups=channels)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x.square()
    var_y = local_mean(y * y) - mu_y.square()
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    similarity = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return similarity.mean(dim=(1, 2, 3))

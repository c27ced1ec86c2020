"""Representation diagnostics: label-free numbers about features and attention, as the papers define them.

- :func:`rankme`: RankMe (Garrido et al., ICML 2023), the effective rank of a feature matrix.
- :func:`alpha_req`: α-ReQ (Agrawal et al., NeurIPS 2022), the power-law decay of the feature
  covariance's eigenvalues, with the R² of its fit.
- :func:`attention_distance`, :func:`attention_entropy`, :func:`head_diversity`: per head, from an
  attention map over patch tokens (Dosovitskiy et al. 2021; Xie et al., "Revealing the Dark Secrets
  of MIM", CVPR 2023; Park et al., ICLR 2023).
- :func:`linear_cka`: linear centred kernel alignment between two layers' features (Kornblith et al. 2019).

Pure functions of tensors, computed in float64; shapes in each docstring.
"""

from __future__ import annotations

import math

import torch

#: RankMe's ε: added to every normalised singular value (the paper's 1e-7), so that log is finite.
RANKME_EPS = 1e-7


def rankme(features: torch.Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe of features [N, K]: with σ the singular values of the (uncentred) feature matrix and
    p_k = σ_k / Σσ + ε, exp(−Σ p_k log p_k). Between 1 and min(N, K); the same for features scaled by
    any factor. The paper's definition (singular values of the N×K matrix, not eigenvalues of its
    covariance, which square them and weigh the top of the spectrum more)."""
    if features.ndim != 2:
        raise ValueError(f"features must be [N, K], got shape {tuple(features.shape)}")
    sigma = torch.linalg.svdvals(features.double())
    p = sigma / sigma.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return math.exp(-(p * p.log()).sum().item())


def alpha_req(features: torch.Tensor) -> tuple[float, float]:
    """α-ReQ of features [N, K]: the eigenvalues λ_1 ≥ λ_2 ≥ ... of their covariance (centred, ddof 1)
    fit as λ_i ∝ i^(−α) by least squares of log λ_i on log i over the positive eigenvalues. Returns
    (α, R² of that fit). Needs at least 2 positive eigenvalues."""
    if features.ndim != 2:
        raise ValueError(f"features must be [N, K], got shape {tuple(features.shape)}")
    centred = features.double() - features.double().mean(0)
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred / max(1, len(features) - 1)).flip(0)
    positive = eigenvalues[eigenvalues > eigenvalues[0] * 1e-12] if eigenvalues[0] > 0 else eigenvalues[:0]
    if len(positive) < 2:
        raise ValueError("alpha_req needs features whose covariance has at least 2 positive eigenvalues")
    x = torch.arange(1, len(positive) + 1, dtype=torch.float64).log()
    y = positive.log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum()
    residual = y - (y.mean() + slope * (x - x.mean()))
    r2 = 1 - residual.square().sum() / (y - y.mean()).square().sum()
    return -slope.item(), r2.item()


def _check_attention(attention: torch.Tensor) -> torch.Tensor:
    if attention.ndim != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"attention must be [B, H, T, T] (rows: queries, summing to 1), got {tuple(attention.shape)}")
    return attention.double()


def attention_distance(attention: torch.Tensor, grid: tuple[int, int], patch_size: int = 1) -> torch.Tensor:
    """Mean attention distance per head, float64 [H]: for each query patch, the distance in pixels
    from it to every key patch (centres ``patch_size`` apart on an h×w ``grid``, T = h·w tokens, row
    major), weighted by the attention; averaged over queries and images. attention [B, H, T, T]."""
    attention = _check_attention(attention)
    h, w = grid
    if h * w != attention.shape[-1]:
        raise ValueError(f"a {h}x{w} grid has {h * w} tokens, the attention {attention.shape[-1]}")
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    centres = torch.stack([ys.flatten(), xs.flatten()], dim=1).to(attention.device) * patch_size
    distance = torch.cdist(centres, centres)  # [T, T]
    return (attention * distance).sum(-1).mean(dim=(0, 2))


def attention_entropy(attention: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of each query's attention distribution per head, float64 [H]: 0 when
    every query attends to one token, log T when uniformly to all. attention [B, H, T, T]."""
    attention = _check_attention(attention)
    return -torch.xlogy(attention, attention).sum(-1).mean(dim=(0, 2))


def head_diversity(attention: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean KL divergence (nats) between the attention distributions of every ordered pair of
    distinct heads, over queries and images: 0 when all heads attend alike. attention [B, H, T, T],
    H ≥ 2; ``eps`` keeps log finite where a head gives a token no attention."""
    attention = _check_attention(attention)
    heads = attention.shape[1]
    if heads < 2:
        raise ValueError("head_diversity needs at least 2 heads")
    p = attention.unsqueeze(2)  # [B, H, 1, T, T]
    q = attention.unsqueeze(1)  # [B, 1, H, T, T]
    kl = (torch.xlogy(p, p) - p * (q + eps).log()).sum(-1)  # [B, H, H, T]
    return (kl.mean(dim=(0, 3)).sum() / (heads * (heads - 1))).item()


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature matrices of the same N examples, x [N, D1] and y [N, D2]:
    ‖Yᶜᵀ Xᶜ‖²_F / (‖Xᶜᵀ Xᶜ‖_F ‖Yᶜᵀ Yᶜ‖_F) with Xᶜ, Yᶜ centred per feature. 1 for y = x·Q·c (Q
    orthogonal, c > 0), near 0 for independent features (N ≫ D)."""
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"need x [N, D1] and y [N, D2] of the same N, got {tuple(x.shape)} and {tuple(y.shape)}")
    xc, yc = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    cross = (yc.T @ xc).square().sum()
    return (cross / ((xc.T @ xc).square().sum().sqrt() * (yc.T @ yc).square().sum().sqrt())).item()

"""mimbench.diagnostics against known answers (issue 34, item 1)."""

from __future__ import annotations

import math

import pytest
import torch

from mimbench import diagnostics


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_rankme_of_isotropic_features_is_their_dimension_and_of_rank_r_data_is_r():
    isotropic = torch.randn(20_000, 64, generator=_generator(), dtype=torch.float64)
    assert diagnostics.rankme(isotropic) == pytest.approx(64, abs=0.5)
    low_rank = torch.randn(20_000, 8, generator=_generator(1), dtype=torch.float64) @ \
        torch.linalg.qr(torch.randn(64, 64, generator=_generator(2), dtype=torch.float64))[0][:8]
    assert diagnostics.rankme(low_rank) == pytest.approx(8, abs=0.1)
    assert diagnostics.rankme(1000 * isotropic) == pytest.approx(diagnostics.rankme(isotropic), rel=1e-9)


def test_rankme_by_hand_on_a_diagonal_matrix():
    # singular values 3, 1 (and 0): p = 3/4, 1/4 (+ eps) -> exp of their entropy
    features = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    p = torch.tensor([0.75, 0.25]) + diagnostics.RANKME_EPS
    assert diagnostics.rankme(features) == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-6)


def _with_covariance(eigenvalues: torch.Tensor, n: int = 2_000) -> torch.Tensor:
    """Features [n, K] whose covariance (centred, ddof 1) has exactly ``eigenvalues``."""
    centred = torch.randn(n, len(eigenvalues), generator=_generator(3), dtype=torch.float64)
    q, _ = torch.linalg.qr(centred - centred.mean(0))  # orthonormal columns, each centred
    rotation, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=_generator(4),
                                              dtype=torch.float64))
    return q * (eigenvalues * (n - 1)).sqrt() @ rotation


def test_alpha_req_recovers_an_exact_power_law_and_says_when_it_is_not_one():
    features = _with_covariance(torch.arange(1, 33, dtype=torch.float64) ** -1.5)
    alpha, r2 = diagnostics.alpha_req(features)
    assert alpha == pytest.approx(1.5, abs=1e-6) and r2 == pytest.approx(1.0, abs=1e-9)
    flat_then_cliff = torch.cat([torch.ones(16), torch.full((16,), 1e-3)]).double()
    assert diagnostics.alpha_req(_with_covariance(flat_then_cliff))[1] < 0.9
    with pytest.raises(ValueError, match="at least 2 positive eigenvalues"):
        diagnostics.alpha_req(torch.ones(10, 4))


def test_identity_attention_has_distance_and_entropy_zero():
    tokens = 16
    attention = torch.eye(tokens).expand(2, 3, tokens, tokens)
    assert torch.allclose(diagnostics.attention_distance(attention, (4, 4), patch_size=4), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(diagnostics.attention_entropy(attention), torch.zeros(3, dtype=torch.float64))


def test_uniform_attention_has_the_mean_pairwise_patch_distance_and_entropy_log_t():
    h, w, patch = 3, 4, 4
    tokens = h * w
    attention = torch.full((1, 2, tokens, tokens), 1 / tokens)
    centres = [(y * patch, x * patch) for y in range(h) for x in range(w)]
    mean_distance = sum(math.dist(a, b) for a in centres for b in centres) / tokens**2
    assert torch.allclose(diagnostics.attention_distance(attention, (h, w), patch),
                          torch.full((2,), mean_distance, dtype=torch.float64))
    assert torch.allclose(diagnostics.attention_entropy(attention), torch.full((2,), math.log(tokens), dtype=torch.float64))


def test_head_diversity_is_zero_for_alike_heads_and_the_kl_by_hand_for_two():
    same = torch.softmax(torch.randn(2, 1, 5, 5, generator=_generator()), dim=-1).expand(2, 3, 5, 5)
    assert diagnostics.head_diversity(same) == pytest.approx(0.0, abs=1e-9)
    a, b = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    attention = torch.stack([a.expand(2, 2), b.expand(2, 2)])[None]  # [1, 2 heads, 2 queries, 2 keys]
    kl = lambda p, q: (p * (p / q).log()).sum().item()  # noqa: E731
    assert diagnostics.head_diversity(attention) == pytest.approx((kl(a, b) + kl(b, a)) / 2, rel=1e-6)


def test_linear_cka_is_one_under_rotation_and_scale_and_near_zero_for_independent_features():
    x = torch.randn(5_000, 16, generator=_generator(5), dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=_generator(6), dtype=torch.float64))
    assert diagnostics.linear_cka(x, 3.0 * x @ rotation + 7.0) == pytest.approx(1.0, abs=1e-9)
    assert diagnostics.linear_cka(x, torch.randn(5_000, 16, generator=_generator(7), dtype=torch.float64)) < 0.01
    assert diagnostics.linear_cka(x, x[:, :8]) == pytest.approx(math.sqrt(8 / 16), rel=0.05)  # half the variance


def test_bad_shapes_are_one_clear_error():
    with pytest.raises(ValueError, match=r"features must be \[N, K\]"):
        diagnostics.rankme(torch.ones(3))
    with pytest.raises(ValueError, match=r"a 3x3 grid has 9 tokens"):
        diagnostics.attention_distance(torch.ones(1, 1, 4, 4) / 4, (3, 3))
    with pytest.raises(ValueError, match="same N"):
        diagnostics.linear_cka(torch.ones(4, 2), torch.ones(5, 2))

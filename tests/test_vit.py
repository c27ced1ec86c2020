"""The ViT components: SimMIM encoder `vit`, MAE encoder `mae`, MAE decoder `mae`."""

import importlib.metadata
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mimbench import testing
from mimbench.errors import ConfigError
from mimbench.plugins import load_plugins
from mimbench.registry import Registry
from mimbench_plugins.vit import (MAEDecoder, MAEEncoder, ViTEncoder, fully_hidden, patchify, sincos_pos_embed,
                                  unpatchify)

TINY = {"dim": 32, "depth": 2, "heads": 4}


def pixel_mask(cells: torch.Tensor, p: int) -> torch.Tensor:
    """cells [B, h, w] bool -> pixel mask [B, h*p, w*p]: each True cell hides a whole p x p patch."""
    return cells.repeat_interleave(p, 1).repeat_interleave(p, 2)


def random_cells(batch: int, grid: int, hidden: int, seed: int = 0) -> torch.Tensor:
    """[B, grid, grid] bool with exactly ``hidden`` True cells per image."""
    ranks = torch.rand(batch, grid * grid, generator=torch.Generator().manual_seed(seed)).argsort(1).argsort(1)
    return (ranks < hidden).view(batch, grid, grid)


# ----------------------------------------------------------------------------- conformance

@pytest.mark.parametrize("factory, params, size", [
    (ViTEncoder, TINY, 32),                                  # patch_size 4 (the default)
    (ViTEncoder, {**TINY, "pos_embed": "learned"}, 32),
    (ViTEncoder, {**TINY, "patch_size": 8}, 64),
    (ViTEncoder, {**TINY, "patch_size": 8, "pos_embed": "learned"}, 64),
    (ViTEncoder, {"patch_size": 16, "dim": 16, "depth": 1, "heads": 2}, 224),
    (ViTEncoder, {"patch_size": 16, "dim": 16, "depth": 1, "heads": 2, "pos_embed": "learned"}, 224),
    (MAEEncoder, TINY, 32),
    (MAEEncoder, {**TINY, "pos_embed": "learned"}, 32),
    (MAEEncoder, {**TINY, "patch_size": 8}, 64),
    (MAEEncoder, {"patch_size": 16, "dim": 16, "depth": 1, "heads": 2}, 224),
], ids=lambda v: getattr(v, "__name__", None))
def test_encoders_conform(factory, params, size):
    testing.check_encoder(factory, params, in_channels=3, image_size=size, batch=2 if size > 64 else 4)


@pytest.mark.parametrize("stride, size", [(4, 32), (8, 64)])
def test_mae_decoder_conforms(stride, size):
    testing.check_decoder(MAEDecoder, {"dim": 32, "depth": 1, "heads": 4}, stride=stride, image_size=size)


def test_registered_with_described_and_validated_params():
    in_entry_points = any(ep.value == "mimbench_plugins.vit" for ep in importlib.metadata.entry_points(group="mimbench"))
    registry = Registry(load_plugins([] if in_entry_points else ["mimbench_plugins.vit"], use_env=False))
    assert registry.get("encoder", "vit").factory is ViTEncoder
    assert registry.get("encoder", "mae").factory is MAEEncoder
    assert registry.get("decoder", "mae").factory is MAEDecoder
    assert registry.get("encoder", "mae").description.startswith("ViT for MAE")
    encoder = registry.build("encoder", "vit", {"pos_embed": "learned", "dim": 32}, in_channels=1, image_size=28)
    assert (encoder.out_dim, encoder.stride) == (32, 4)
    with pytest.raises(ConfigError, match="pos_embed"):
        registry.build("encoder", "vit", {"pos_embed": "fourier"}, in_channels=1, image_size=28)
    with pytest.raises(ConfigError, match="image_size 30 is not divisible by patch_size 4"):
        registry.build("encoder", "mae", {}, in_channels=1, image_size=30)


@pytest.mark.parametrize("factory, params, message", [
    (ViTEncoder, {"image_size": 30}, "image_size 30 is not divisible by patch_size 4"),
    (ViTEncoder, {"dim": 30, "heads": 4}, "dim 30 is not divisible by heads 4"),
    (MAEEncoder, {"dim": 18, "heads": 3}, "sin-cos position embedding needs dim divisible by 4, got 18"),
    (MAEEncoder, {"depth": 0}, "depth must be >= 1, got 0"),
    (ViTEncoder, {"pos_embed": "rope"}, "pos_embed must be 'sincos' or 'learned', got 'rope'"),
    (MAEDecoder, {"stride": 5}, "image_size 32 is not divisible by stride 5"),
    (MAEDecoder, {"mlp_ratio": 0.0}, "mlp_ratio must be > 0, got 0.0"),
])
def test_bad_values_raise_one_line(factory, params, message):
    context = ({"in_dim": 8, "stride": 4, "out_channels": 1, "image_size": 32} if factory is MAEDecoder
               else {"in_channels": 1, "image_size": 32})
    with pytest.raises(ValueError, match=message) as info:
        factory(**{**context, **params})
    assert "\n" not in str(info.value)


def test_learned_position_embedding_takes_any_dim():
    assert ViTEncoder(1, 8, dim=6, heads=2, pos_embed="learned")(torch.randn(1, 1, 8, 8)).shape == (1, 6, 2, 2)


# ----------------------------------------------------------------------------- shared pieces

def test_sincos_position_embedding_matches_the_formula():
    dim, grid = 16, 5
    table = sincos_pos_embed(dim, grid)
    assert table.shape == (grid * grid, dim)
    row, col = 2, 3
    token = table[row * grid + col]                       # tokens are row-major
    omega = [10000 ** (-i / (dim // 4)) for i in range(dim // 4)]
    expected = ([math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]    # first half: column
                + [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega])  # second half: row
    assert torch.allclose(token, torch.tensor(expected), atol=1e-6)
    assert torch.equal(table[0], torch.tensor([0.0] * (dim // 4) + [1.0] * (dim // 4)).repeat(2))
    # the encoder adds exactly this table and keeps it out of the state dict (it is fixed)
    encoder = ViTEncoder(1, 20, patch_size=4, dim=dim)
    assert torch.equal(encoder.pos_embed[0], table)
    assert "pos_embed" not in encoder.state_dict()
    assert "pos_embed" in ViTEncoder(1, 20, dim=dim, pos_embed="learned").state_dict()


def test_patchify_round_trip_and_fully_hidden():
    images = torch.randn(2, 3, 12, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 9, 48)
    assert torch.equal(patches[1, 5].view(4, 4, 3), images[1, :, 4:8, 8:12].permute(1, 2, 0))  # row 1, column 2
    assert torch.equal(unpatchify(patches, 4, 3), images)
    mask = torch.zeros(2, 12, 12, dtype=torch.bool)
    mask[0, 0:4, 4:8] = True             # patch 1 fully hidden
    mask[0, 4:8, 4:8] = True
    mask[0, 7, 7] = False                # patch 4 hidden but for one pixel
    hidden = fully_hidden(mask, 4)
    assert hidden.shape == (2, 9) and hidden.sum() == 1 and hidden[0, 1]


def test_blocks_give_the_grid_after_each_block():
    encoder = MAEEncoder(1, 16, **TINY).eval()
    images = torch.randn(3, 1, 16, 16)
    grids = encoder.blocks(images)
    assert [g.shape for g in grids] == [(3, 32, 4, 4)] * 2
    assert torch.allclose(grids[-1], encoder(images), atol=1e-6)
    first = encoder.transformer.layers[0](encoder.embed(images) + encoder.pos_embed)
    assert torch.allclose(grids[0], encoder.to_grid(first), atol=1e-6)


# ----------------------------------------------------------------------------- SimMIM encoder

@pytest.fixture
def vit():
    torch.manual_seed(0)
    return ViTEncoder(1, 16, **TINY).eval()


def test_vit_no_mask_equals_all_visible(vit):
    images = torch.randn(3, 1, 16, 16)
    assert torch.equal(vit(images), vit(images, torch.zeros(3, 16, 16, dtype=torch.bool)))


def test_vit_replaces_only_fully_hidden_patches_by_the_mask_token(vit):
    images = torch.randn(2, 1, 16, 16)
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[:, 0:4, 0:4] = True             # token 0: fully hidden
    mask[:, 4:8, 4:7] = True             # token 5: 12 of 16 pixels hidden
    with torch.no_grad():
        out = vit(images, mask)          # called directly: the hidden pixels are NOT zeroed
        tokens = vit.embed(images)
        tokens[:, 0] = vit.mask_token[0, 0]
        by_hand = vit.to_grid(vit.transformer(tokens + vit.pos_embed))
        assert torch.allclose(out, by_hand, atol=1e-6)
        # a fully hidden patch's pixels do not matter at all
        changed = images.clone()
        changed[:, :, 0:4, 0:4] = torch.randn(2, 1, 4, 4) * 5
        assert torch.equal(vit(changed, mask), out)
        # a partially hidden patch is still read
        changed = images.clone()
        changed[:, :, 4:8, 4:8] += 1.0
        assert not torch.allclose(vit(changed, mask), out, atol=1e-3)


# ----------------------------------------------------------------------------- MAE encoder

@pytest.fixture
def mae():
    torch.manual_seed(0)
    return MAEEncoder(1, 16, **TINY).eval()


def test_mae_encodes_visible_tokens_only(mae):
    images = torch.randn(3, 1, 16, 16)
    cells = random_cells(3, 4, hidden=10)          # 6 of 16 tokens visible per image
    mask = pixel_mask(cells, 4)
    with torch.no_grad():
        out = mae(images, mask)                    # no zeroing of hidden pixels
        assert out.shape == (3, 32, 4, 4)
        assert torch.equal(out.permute(0, 2, 3, 1)[cells], torch.zeros(30, 32))
        assert (out.permute(0, 2, 3, 1)[~cells].abs().sum(-1) > 0).all()
        changed = torch.where(mask.unsqueeze(1), torch.randn_like(images) * 5, images)
        assert torch.equal(mae(changed, mask), out)
        tokens = mae.embed(images) + mae.pos_embed  # [3, 16, 32]
        for i in range(3):                          # each image on its own, by hand
            visible = ~cells[i].flatten()
            expected = mae.transformer(tokens[i, visible].unsqueeze(0))[0]
            assert torch.allclose(out[i].flatten(1).T[visible], expected, atol=1e-5)


def test_mae_without_fully_hidden_patches_encodes_everything(mae):
    images = torch.randn(2, 1, 16, 16)
    partial = torch.zeros(2, 16, 16, dtype=torch.bool)
    partial[:, ::2, ::2] = True                    # a quarter of every patch hidden, no patch fully
    with torch.no_grad():
        assert torch.equal(mae(images, partial), mae(images))
        assert torch.equal(mae(images, torch.zeros_like(partial)), mae(images))


def test_mae_rejects_unequal_hidden_counts(mae):
    cells = torch.zeros(2, 4, 4, dtype=torch.bool)
    cells[0, 0, :3] = True
    cells[1, 0, :1] = True
    with pytest.raises(ValueError, match=r"same number of fully hidden 4x4 patches in every image, got 1 to 3; "
                                         r"use masker random_token with patch_size 4") as info:
        mae(torch.randn(2, 1, 16, 16), pixel_mask(cells, 4))
    assert "\n" not in str(info.value)


def test_mae_compute_scales_with_visible_tokens():
    """FLOPs at 0%, 50%, 75% hidden. We assert the exact count, conv patch embedding (all N patches)
    + per block: linears 2*B*n*(3D^2 + D^2 + 2*D*4D) and attention 2*2*B*n^2*D for n visible tokens,
    so the transformer part falls between (n/N)^2 (attention) and n/N (linears) of the full cost:
    at 75% hidden it is 0.20 of it (n/N = 0.25). The SimMIM encoder's count does not change."""
    b, c, size, p, d, depth = 2, 1, 32, 4, 32, 2
    n_all = (size // p) ** 2                                                   # 64 tokens
    mae, vit = MAEEncoder(c, size, patch_size=p, dim=d, depth=depth), ViTEncoder(c, size, patch_size=p, dim=d, depth=depth)
    images = torch.randn(b, c, size, size)

    def flops(encoder, hidden: int) -> int:
        counter = FlopCounterMode(display=False)
        # CPU's fused attention kernel is not counted; the math kernel is (two batched matmuls).
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            encoder(images, pixel_mask(random_cells(b, size // p, hidden), p))
        return counter.get_total_flops()

    patch_embed = 2 * b * n_all * c * p * p * d
    def transformer(n: int) -> int:
        return depth * (2 * b * n * (3 * d * d + d * d + 2 * d * 4 * d) + 2 * 2 * b * n * n * d)

    for hidden in (0, 32, 48):
        assert flops(mae, hidden) == patch_embed + transformer(n_all - hidden)
        assert flops(vit, hidden) == patch_embed + transformer(n_all)
    for hidden in (32, 48):
        visible = (n_all - hidden) / n_all
        share = (flops(mae, hidden) - patch_embed) / transformer(n_all)
        assert visible**2 < share < visible
        assert share > 0.75 * visible                                           # mostly linear at this size
    assert flops(mae, 48) / flops(mae, 0) < 0.22                                # 75% hidden: under a quarter


# ----------------------------------------------------------------------------- MAE decoder

@pytest.fixture
def decoder():
    torch.manual_seed(0)
    return MAEDecoder(in_dim=8, stride=4, out_channels=2, image_size=16, dim=32, depth=1, heads=4)


def test_mae_decoder_puts_the_mask_token_exactly_at_hidden_patches(decoder):
    features = torch.randn(2, 8, 4, 4)
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[:, 0:4, 0:8] = True                       # tokens 0 and 1 fully hidden
    mask[:, 4:8, 4:6] = True                       # token 5 partially hidden: not a mask token
    with torch.no_grad():
        out = decoder(features, mask)
        assert out.shape == (2, 2, 16, 16)
        tokens = decoder.embed(features.flatten(2).transpose(1, 2))
        tokens[:, :2] = decoder.mask_token[0, 0]
        by_hand = unpatchify(decoder.pred(decoder.transformer(tokens + decoder.pos_embed)), 4, 4)
        assert torch.allclose(out, by_hand, atol=1e-6)
        for token, matters in [(0, False), (1, False), (5, True), (15, True)]:
            changed = features.clone()
            changed[:, :, token // 4, token % 4] += 1.0
            assert torch.equal(decoder(changed, mask), out) != matters, f"token {token}"
        # with no mask, nothing is replaced: every token's features matter and no mask token is used
        plain = decoder(features)
        tokens = decoder.embed(features.flatten(2).transpose(1, 2))
        assert torch.allclose(plain, unpatchify(decoder.pred(decoder.transformer(tokens + decoder.pos_embed)), 4, 4),
                              atol=1e-6)
    decoder(features).sum().backward()
    assert decoder.mask_token.grad is None


# ----------------------------------------------------------------------------- a SimMIM / MAE training step

@pytest.mark.parametrize("factory", [ViTEncoder, MAEEncoder])
def test_one_training_step_lowers_the_loss(factory):
    from mimbench.contract import reconstruct
    from mimbench_plugins.decoders import LinearDecoder
    torch.manual_seed(0)
    encoder = factory(1, 16, **TINY)
    head = MAEDecoder(32, 4, 1, 16, dim=32, depth=1) if factory is MAEEncoder else LinearDecoder(32, 4, 1, 16)
    params = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    images, mask = torch.randn(8, 1, 16, 16), pixel_mask(random_cells(8, 4, hidden=12), 4)

    def loss() -> torch.Tensor:
        return (reconstruct(encoder, head, images, mask, check=True) - images).abs()[mask.unsqueeze(1)].mean()

    before = loss()
    for _ in range(5):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss() < before.detach() - 0.01

"""The paper components: Swin and ResNet encoders, the MLP decoder, the extended losses."""

import math

import pytest
import torch

from mimbench import testing
from mimbench.errors import ConfigError
from mimbench.plugins import load_plugins
from mimbench.registry import Registry
from mimbench_plugins.decoders import LinearDecoder, MLPDecoder
from mimbench_plugins.encoders import ResNetEncoder, SwinEncoder, fully_hidden_patches
from mimbench_plugins.losses import L1Loss, MSELoss, PSNRLoss, SmoothL1Loss, norm_pix_target, norm_pix_to_image

REGISTRY = Registry(load_plugins(use_env=False))
SWIN_224_TINY = dict(patch_size=4, window_size=7, embed_dim=24, depths=[2, 2, 2, 2], heads=[1, 2, 4, 8])


def test_all_registered():
    assert {"cnn", "swin", "resnet"} <= set(REGISTRY.names("encoder"))
    assert {"linear", "upsample", "mlp"} <= set(REGISTRY.names("decoder"))
    assert {"l1", "mse", "smooth_l1", "psnr"} <= set(REGISTRY.names("loss"))


# --- Swin ------------------------------------------------------------------------------------

@pytest.mark.parametrize("image_size, params", [(32, {}), (64, {}), (224, SWIN_224_TINY)],
                         ids=["32px-defaults", "64px-defaults", "224px-tiny"])
def test_swin_conforms(image_size, params):
    testing.check_encoder(SwinEncoder, params, image_size=image_size, batch=2)


@pytest.mark.parametrize("image_size, params, stride, out_dim", [
    (32, {}, 4, 96),
    (224, SWIN_224_TINY, 32, 192),
    (224, dict(patch_size=4, window_size=7, embed_dim=96, depths=[2, 2, 6, 2], heads=[3, 6, 12, 24]), 32, 768),
])
def test_swin_stride_and_width(image_size, params, stride, out_dim):
    encoder = SwinEncoder(in_channels=3, image_size=image_size, **params)
    assert (encoder.stride, encoder.out_dim) == (stride, out_dim)


def test_swin_blocks_are_the_stage_grids():
    encoder = SwinEncoder(in_channels=1, image_size=32, depths=[1, 1, 1], heads=[1, 2, 4]).eval()
    images = torch.randn(2, 1, 32, 32)
    grids = encoder.blocks(images)
    assert [tuple(g.shape) for g in grids] == [(2, 48, 16, 16), (2, 96, 8, 8), (2, 192, 4, 4)]
    assert torch.equal(grids[-1], encoder(images))


def test_swin_puts_the_mask_token_on_exactly_the_fully_hidden_patches():
    torch.manual_seed(0)
    encoder = SwinEncoder(in_channels=1, image_size=32).eval()  # patch_size 2
    images = torch.randn(2, 1, 32, 32)
    mask = torch.zeros(2, 32, 32, dtype=torch.bool)
    mask[:, :4, :4] = True  # 4 whole patches per image
    mask[:, 10, 10] = True  # one pixel of patch (5, 5): that token must stay
    tokens, plain = encoder.embed(images, mask), encoder.embed(images)
    hidden = fully_hidden_patches(mask, 2)
    assert hidden.sum().item() == 8 and not hidden[:, 5, 5].any()
    assert torch.equal(tokens[hidden], encoder.mask_token.expand(8, -1))
    assert torch.equal(tokens[~hidden], plain[~hidden])

    # Without the core's zeroing: pixels of fully hidden patches do not matter, others do.
    with torch.no_grad():
        features = encoder(images, mask)
        whole = images.clone()
        whole[:, :, :4, :4] = 100.0
        assert torch.equal(encoder(whole, mask), features)
        partial = images.clone()
        partial[:, :, 10, 10] = 100.0
        assert not torch.allclose(encoder(partial, mask), features)


def test_swin_small_grid_uses_one_unshifted_window():
    # 32 px, patch 4: grids 8 and 4; window 8 covers stage 1 exactly and is clamped to 4 in stage 2.
    encoder = SwinEncoder(in_channels=1, image_size=32, patch_size=4, window_size=8)
    windows = [(b.attn.window_size, b.attn.shift_size) for stage in encoder.stages for b in stage[-2:]]
    assert windows == [([8, 8], [0, 0]), ([8, 8], [0, 0]), ([4, 4], [0, 0]), ([4, 4], [0, 0])]
    shifted = SwinEncoder(in_channels=1, image_size=64, patch_size=2, window_size=4)  # grids 32, 16
    assert [b.attn.shift_size for b in shifted.stages[0]] == [[0, 0], [2, 2]]


@pytest.mark.parametrize("params, message", [
    (dict(depths=[2, 2], heads=[3]), "one entry per stage"),
    (dict(embed_dim=50), "width 50 is not divisible by heads 3"),
    (dict(window_size=3), "16x16 token grid is not divisible by window_size 3"),
    (dict(patch_size=3), "image_size 32 is not divisible by the encoder stride 6"),
    (dict(depths=[2, 0]), "depth and heads >= 1"),
    (dict(mlp_ratio=0.0), "mlp_ratio must be > 0"),
])
def test_swin_rejects_bad_shapes_in_one_line(params, message):
    with pytest.raises(ValueError, match=message) as error:
        SwinEncoder(in_channels=3, image_size=32, **params)
    assert "\n" not in str(error.value)


def test_swin_params_are_validated_by_the_registry():
    with pytest.raises(ConfigError, match="'depths' must be list\\[int\\]"):
        REGISTRY.resolve_params("encoder", "swin", {"depths": 2})
    with pytest.raises(ConfigError, match="encoder 'swin': stage 2: width 96 is not divisible by heads 5"):
        REGISTRY.build("encoder", "swin", {"heads": [3, 5]}, in_channels=3, image_size=32)


# --- ResNet ----------------------------------------------------------------------------------

@pytest.mark.parametrize("small_stem", [True, False], ids=["small-stem", "standard-stem"])
@pytest.mark.parametrize("depth", [18, 34, 50])
def test_resnet_conforms_and_reports_its_grid(depth, small_stem):
    params = dict(depth=depth, small_stem=small_stem)
    testing.check_encoder(ResNetEncoder, params, image_size=32, batch=2)
    encoder = ResNetEncoder(in_channels=3, image_size=32, **params).eval()
    stride, out_dim = (8 if small_stem else 32), (2048 if depth == 50 else 512)
    assert (encoder.stride, encoder.out_dim) == (stride, out_dim)
    with torch.no_grad():
        grids = encoder.blocks(torch.randn(2, 3, 32, 32))
    expansion = 4 if depth == 50 else 1
    first = 32 if small_stem else 8
    assert [tuple(g.shape) for g in grids] == [
        (2, 64 * expansion * 2**i, first // 2**i, first // 2**i) for i in range(4)]
    assert grids[-1].shape[-1] == 32 // encoder.stride


def test_resnet_takes_any_channel_count_and_ignores_the_mask():
    encoder = ResNetEncoder(in_channels=1, image_size=16)
    assert encoder.stem[0].in_channels == 1 and encoder.stem[0].kernel_size == (3, 3)
    assert isinstance(encoder.stem[3], torch.nn.Identity)  # no max-pool with the small stem
    images = torch.randn(2, 1, 16, 16)
    for mode in (encoder.eval, encoder.train):
        mode()
        with torch.no_grad():
            assert torch.equal(encoder(images), encoder(images, torch.zeros(2, 16, 16, dtype=torch.bool)))


def test_resnet_rejects_bad_values():
    with pytest.raises(ValueError, match="depth must be one of 18, 34, 50"):
        ResNetEncoder(in_channels=3, image_size=32, depth=101)
    with pytest.raises(ValueError, match="image_size 48 is not divisible by the encoder stride 32"):
        ResNetEncoder(in_channels=3, image_size=48, small_stem=False)
    with pytest.raises(ConfigError, match="'depth' must be Literal\\[18, 34, 50\\]"):
        REGISTRY.resolve_params("encoder", "resnet", {"depth": 101})


# --- MLP decoder -----------------------------------------------------------------------------

def test_mlp_decoder_conforms():
    testing.check_decoder(MLPDecoder, {})
    testing.check_decoder(MLPDecoder, {"hidden_dim": 8}, stride=8, out_channels=1)


@pytest.mark.parametrize("factory", [LinearDecoder, MLPDecoder])
def test_pixel_shuffle_heads_are_local(factory):
    """A feature vector only decides the stride x stride block of pixels it sits on."""
    torch.manual_seed(0)
    decoder = factory(in_dim=8, stride=4, out_channels=3, image_size=16)
    features = torch.randn(1, 8, 4, 4)
    changed = features.clone()
    changed[0, :, 1, 2] += 1.0
    with torch.no_grad():
        diff = (decoder(changed) - decoder(features)).abs().sum(1)[0]  # [16, 16]
    block = torch.zeros(16, 16, dtype=torch.bool)
    block[4:8, 8:12] = True
    assert (diff[block] > 0).all() and (diff[~block] == 0).all()


def test_mlp_decoder_shape_and_errors():
    decoder = MLPDecoder(in_dim=16, stride=4, out_channels=3, image_size=32, hidden_dim=32)
    assert [type(m).__name__ for m in decoder.head] == ["Conv2d", "GELU", "Conv2d", "PixelShuffle"]
    assert decoder.head[2].out_channels == 4 * 4 * 3
    with pytest.raises(ValueError, match="hidden_dim must be >= 1"):
        MLPDecoder(in_dim=16, stride=4, out_channels=3, image_size=32, hidden_dim=0)


# --- losses ----------------------------------------------------------------------------------

PIXEL_LOSSES = [L1Loss, MSELoss, SmoothL1Loss]


@pytest.mark.parametrize("norm_pix", [False, True])
@pytest.mark.parametrize("masked_only", [True, False])
@pytest.mark.parametrize("factory", PIXEL_LOSSES, ids=lambda f: f.__name__)
def test_pixel_losses_conform(factory, masked_only, norm_pix):
    testing.check_loss(factory, dict(masked_only=masked_only, norm_pix=norm_pix))


@pytest.mark.parametrize("masked_only", [True, False])
def test_psnr_loss_conforms(masked_only):
    testing.check_loss(PSNRLoss, dict(masked_only=masked_only))


def test_norm_pix_target_has_zero_mean_unit_std_per_patch():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 16, 16) * 5 + 3
    normed = norm_pix_target(target, 4)
    patches = normed.reshape(2, 3, 4, 4, 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(2, 16, 48)
    assert torch.allclose(patches.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(patches.std(-1), torch.ones(2, 16), atol=1e-4)  # unbiased, as MAE
    # A constant patch becomes zeros rather than a division by zero.
    assert torch.equal(norm_pix_target(torch.full((1, 1, 4, 4), 7.0), 4), torch.zeros(1, 1, 4, 4))


def test_norm_pix_target_matches_mae_on_patchified_images():
    torch.manual_seed(1)
    target = torch.randn(2, 3, 8, 8)
    # MAE's patchify: [B, L, p*p*C], then mean / var over the last dim.
    patches = target.reshape(2, 3, 2, 4, 2, 4).permute(0, 2, 4, 3, 5, 1).reshape(2, 4, 48)
    expected = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6) ** 0.5
    got = norm_pix_target(target, 4).reshape(2, 3, 2, 4, 2, 4).permute(0, 2, 4, 3, 5, 1).reshape(2, 4, 48)
    assert torch.allclose(got, expected, atol=1e-6)


def test_norm_pix_to_image_undoes_the_normalisation():
    torch.manual_seed(2)
    target = torch.rand(2, 1, 8, 8)
    assert torch.allclose(norm_pix_to_image(norm_pix_target(target, 4), target, 4), target, atol=1e-5)


def test_norm_pix_loss_compares_with_the_normalised_target():
    target, pred = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    mask = torch.rand(2, 8, 8) < 0.5
    loss = MSELoss(norm_pix=True, norm_pix_patch_size=4)
    assert torch.allclose(loss(pred, target, mask), MSELoss()(pred, norm_pix_target(target, 4), mask))
    assert loss(norm_pix_target(target, 4), target, mask).item() == 0.0


def test_norm_pix_rejects_sizes_it_cannot_split():
    with pytest.raises(ValueError, match="divisible by norm_pix_patch_size=4, got 10x12"):
        L1Loss(norm_pix=True)(torch.zeros(1, 1, 10, 12), torch.zeros(1, 1, 10, 12), torch.ones(1, 10, 12, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least 2 values per patch"):
        norm_pix_target(torch.zeros(1, 1, 4, 4), 1)
    with pytest.raises(ValueError, match="norm_pix_patch_size must be >= 1"):
        MSELoss(norm_pix_patch_size=0)


def test_masked_mean_is_over_hidden_values():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]])
    mask = torch.tensor([[[True, False], [False, True]]])
    assert L1Loss()(pred, target, mask).item() == pytest.approx((1 + 4 + 5 + 8) / 4)
    assert MSELoss(masked_only=False)(pred, target, mask).item() == pytest.approx(sum(i * i for i in range(1, 9)) / 8)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_smooth_l1_is_quadratic_below_beta_and_shifted_l1_above(beta):
    target = torch.zeros(1, 1, 1, 2)
    mask = torch.ones(1, 1, 2, dtype=torch.bool)
    loss = SmoothL1Loss(beta=beta)
    large = torch.tensor([[[[3.0 * beta, -5.0 * beta]]]])
    assert loss(large, target, mask).item() == pytest.approx(L1Loss()(large, target, mask).item() - 0.5 * beta)
    small = torch.tensor([[[[0.3 * beta, -0.6 * beta]]]])
    assert loss(small, target, mask).item() == pytest.approx(0.5 * ((0.3 * beta) ** 2 + (0.6 * beta) ** 2) / 2 / beta)
    with pytest.raises(ValueError, match="beta must be > 0"):
        SmoothL1Loss(beta=0.0)


def test_psnr_loss_on_a_hand_made_example():
    target = torch.zeros(2, 1, 2, 2)
    pred = torch.tensor([[[[0.1, 9.0], [0.3, 9.0]]], [[[0.2, 0.2], [9.0, 9.0]]]])
    mask = torch.tensor([[[True, False], [True, False]], [[True, True], [False, False]]])
    mse = torch.tensor([(0.01 + 0.09) / 2, 0.04])  # hidden values only: the 9s are visible
    for max_value in (1.0, 2.5):
        expected = -(10 * torch.log10(max_value**2 / mse)).mean()
        assert PSNRLoss(max_value=max_value)(pred, target, mask).item() == pytest.approx(expected.item(), rel=1e-5)
    everything = PSNRLoss(masked_only=False)(pred, target, mask)
    all_mse = pred.square().flatten(1).mean(1)
    assert everything.item() == pytest.approx(-(10 * torch.log10(1 / all_mse)).mean().item(), rel=1e-5)


def test_psnr_loss_skips_images_with_nothing_hidden_and_max_value_is_a_constant_shift():
    torch.manual_seed(0)
    target, pred = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    mask = torch.rand(3, 4, 4) < 0.5
    mask[2] = False
    first_two = PSNRLoss()(pred[:2], target[:2], mask[:2])
    assert torch.allclose(PSNRLoss()(pred, target, mask), first_two)
    assert PSNRLoss()(pred, target, torch.zeros_like(mask)).item() == 0.0
    shifted = PSNRLoss(max_value=10.0)(pred[:2], target[:2], mask[:2])
    assert shifted.item() == pytest.approx(first_two.item() - 20.0, rel=1e-5)
    with pytest.raises(ValueError, match="max_value must be > 0"):
        PSNRLoss(max_value=0.0)


def test_psnr_loss_of_a_perfect_prediction_is_finite():
    target = torch.randn(1, 1, 4, 4)
    value = PSNRLoss()(target.clone(), target, torch.ones(1, 4, 4, dtype=torch.bool))
    assert value.item() == pytest.approx(-100.0)
    assert math.isfinite(value.item())


def test_losses_read_their_params_from_a_suite():
    resolved = REGISTRY.resolve_params("loss", "smooth_l1", {"beta": 2, "norm_pix": True})
    assert resolved == {"beta": 2.0, "masked_only": True, "norm_pix": True, "norm_pix_patch_size": 4}
    assert REGISTRY.resolve_params("loss", "psnr", {}) == {"max_value": 1.0, "masked_only": True}

"""Built-in encoders: images [B, C, H, W] -> features [B, out_dim, H / stride, W / stride]."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50
from torchvision.models.swin_transformer import PatchMerging, SwinTransformerBlock

from mimbench.plugin import Backbone, Interval, hookimpl, renamed
from mimbench_plugins.vit import Depth, Heads, MlpRatio, PatchSize, Width


def _require_positive(**values: float) -> None:
    """Raise ValueError naming the first value that is not > 0."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def _require_divisible(image_size: int, stride: int) -> None:
    if image_size % stride:
        raise ValueError(f"image_size {image_size} is not divisible by the encoder stride {stride}")


class ConvEncoder(nn.Module):
    """Small conv net: two stages of 3x3 conv + ReLU + 2x2 max-pool (stride 4)."""

    stride = 4

    def __init__(self, in_channels: int, image_size: int, hidden_dim: Width = 64):
        super().__init__()
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        _require_divisible(image_size, self.stride)
        self.out_dim, self.in_channels = hidden_dim, in_channels
        self.stages = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, C, H, W] (hidden pixels already zeroed by the core) -> [B, hidden_dim, H/4, W/4]."""
        return self.stages(images)

    def blocks(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The feature grid after each stage: [B, hidden_dim, H/2, W/2], [B, hidden_dim, H/4, W/4]."""
        return [self.stages[:3](images), self.stages(images)]

    def backbone(self):
        """The same six layers as a plain ``torch.nn.Sequential``."""
        c, d = self.in_channels, self.out_dim
        build = ("from torch import nn\n"
                 f"model = nn.Sequential(nn.Conv2d({c}, {d}, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
                 f"                      nn.Conv2d({d}, {d}, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2))")
        return Backbone(renamed(self.state_dict(), [(r"stages\.(.*)", r"\1")]), "torch", build,
                        f"model(x) is mimbench's feature grid [B, {d}, S/4, S/4]; its probes mean-pool it")


def fully_hidden_patches(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """mask [B, H, W] (True = hidden) -> [B, H/p, W/p], True where all p x p pixels of a patch are hidden."""
    b, h, w = mask.shape
    return mask.reshape(b, h // patch_size, patch_size, w // patch_size, patch_size).all(4).all(2)


class SwinEncoder(nn.Module):
    """Swin Transformer trunk (torchvision blocks) with SimMIM's mask token on fully hidden patches.

    Patch embedding (conv, kernel = stride = ``patch_size``, then LayerNorm) gives a grid of
    tokens [B, H/p, W/p, embed_dim] (channels last, as torchvision's blocks expect); every token
    whose patch is fully hidden is replaced by one learned mask token. Then ``len(depths)``
    stages of shifted-window blocks, with a PatchMerging (grid / 2, channels x 2) before every
    stage but the first, and a final LayerNorm.
    ``stride = patch_size * 2**(len(depths) - 1)``, ``out_dim = embed_dim * 2**(len(depths) - 1)``.

    Windows: a stage whose grid is no larger than ``window_size`` attends over the whole grid
    (window = grid, no shift), as in the original Swin; otherwise its grid must be a multiple of
    ``window_size``, since torchvision would zero-pad it and let real tokens attend to the padding.
    The 224 px setting of the paper is ``patch_size=4, window_size=7, embed_dim=96,
    depths=[2, 2, 6, 2], heads=[3, 6, 12, 24]`` (Swin-T).
    """

    def __init__(self, in_channels: int, image_size: int, patch_size: PatchSize = 2, embed_dim: Width = 48,
                 depths: list[Depth] = [2, 2], heads: list[Heads] = [3, 6],
                 window_size: Annotated[int, Interval(ge=1, le=1024)] = 4, mlp_ratio: MlpRatio = 4.0,
                 drop_path: float = 0.0):
        super().__init__()
        _require_positive(patch_size=patch_size, embed_dim=embed_dim, window_size=window_size, mlp_ratio=mlp_ratio)
        if not depths or len(depths) != len(heads):
            raise ValueError(f"depths and heads need one entry per stage, got depths={depths} and heads={heads}")
        if min(depths) < 1 or min(heads) < 1:
            raise ValueError(f"every stage needs depth and heads >= 1, got depths={depths} and heads={heads}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        last = len(depths) - 1
        self.in_channels, self.embed_dim, self.window_size, self.mlp_ratio = in_channels, embed_dim, window_size, mlp_ratio
        self.depths, self.heads, self.image_size = list(depths), list(heads), image_size
        self.patch_size = patch_size
        self.stride = patch_size * 2**last
        self.out_dim = embed_dim * 2**last
        _require_divisible(image_size, self.stride)

        self.patch_embed = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(embed_dim))
        # Stochastic depth grows linearly from 0 to drop_path over all blocks, as in Swin.
        rates = iter(torch.linspace(0.0, drop_path, sum(depths)).tolist())
        self.stages = nn.ModuleList()
        for i, (depth, num_heads) in enumerate(zip(depths, heads)):
            dim, grid = embed_dim * 2**i, image_size // patch_size // 2**i
            if dim % num_heads:
                raise ValueError(f"stage {i + 1}: width {dim} is not divisible by heads {num_heads}")
            window = min(window_size, grid)
            if grid % window:
                raise ValueError(f"stage {i + 1}: the {grid}x{grid} token grid is not divisible by "
                                 f"window_size {window_size}; pick a window that divides it")
            shift = 0 if window == grid else window // 2  # every second block shifts its windows
            merge = [PatchMerging(dim // 2)] if i else []
            blocks = [SwinTransformerBlock(dim, num_heads, window_size=[window] * 2, shift_size=[shift * (j % 2)] * 2,
                                           mlp_ratio=mlp_ratio, stochastic_depth_prob=next(rates))
                      for j in range(depth)]
            self.stages.append(nn.Sequential(*merge, *blocks))
        self.norm = nn.LayerNorm(self.out_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # As torchvision's SwinTransformer and SimMIM: truncated normal (std 0.02) for linear
        # layers and the mask token, zero biases; LayerNorms and the patch conv keep their defaults.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def embed(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, C, H, W], mask [B, H, W] | None -> tokens [B, H/p, W/p, embed_dim] (channels last),
        the mask token in place of every fully hidden patch."""
        tokens = self.embed_norm(self.patch_embed(images).permute(0, 2, 3, 1))
        if mask is None:
            return tokens
        hidden = fully_hidden_patches(mask, self.patch_size).unsqueeze(-1)  # [B, H/p, W/p, 1]
        return torch.where(hidden, self.mask_token.to(tokens.dtype), tokens)

    def _stage_outputs(self, images: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
        """Channels-last output of every stage, the last one after the final LayerNorm."""
        outputs, x = [], self.embed(images, mask)
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        outputs[-1] = self.norm(x)
        return outputs

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, C, H, W], mask [B, H, W] | None -> [B, out_dim, H/stride, W/stride]."""
        return self._stage_outputs(images, mask)[-1].permute(0, 3, 1, 2)

    def blocks(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The grid after each stage i: [B, embed_dim * 2**i, H / (patch_size * 2**i), ...];
        the last one is ``forward(images)``."""
        return [x.permute(0, 3, 1, 2) for x in self._stage_outputs(images, None)]

    def backbone(self):
        """torchvision's ``SwinTransformer`` with these sizes (its stem conv taking ``in_channels``,
        ``head`` an Identity); the mask token is dropped. Only when every stage's grid is at least
        ``window_size``: torchvision pads a smaller grid, this encoder shrinks the window instead."""
        last_grid = self.image_size // self.stride
        if last_grid < self.window_size:
            raise ValueError(f"no torchvision SwinTransformer matches: the last stage's {last_grid}x{last_grid} grid is "
                             f"smaller than window_size {self.window_size} (torchvision would pad it)")
        rules: list[tuple[str, str | None]] = [
            (r"mask_token", None), (r"patch_embed\.(\w+)", r"features.0.0.\1"), (r"embed_norm\.(\w+)", r"features.0.2.\1"),
            (r"stages\.0\.(.*)", r"features.1.\1"), (r"norm\.(\w+)", r"norm.\1")]
        for i in range(1, len(self.depths)):  # stage i is [PatchMerging, blocks...]; torchvision: features[2i], [2i + 1]
            rules += [(rf"stages\.{i}\.0\.(.*)", rf"features.{2 * i}.\1")]
            rules += [(rf"stages\.{i}\.{k}\.(.*)", rf"features.{2 * i + 1}.{k - 1}.\1")
                      for k in range(1, self.depths[i] + 1)]
        p, w = self.patch_size, self.window_size
        build = ("import torchvision\nfrom torch import nn\n"
                 f"model = torchvision.models.SwinTransformer(patch_size=[{p}, {p}], embed_dim={self.embed_dim}, "
                 f"depths={self.depths}, num_heads={self.heads}, window_size=[{w}, {w}], mlp_ratio={self.mlp_ratio!r})\n"
                 + (f"model.features[0][0] = nn.Conv2d({self.in_channels}, {self.embed_dim}, kernel_size={p}, stride={p})\n"
                    if self.in_channels != 3 else "")
                 + "model.head = nn.Identity()")
        return Backbone(renamed(self.state_dict(), rules), "torchvision", build,
                        f"model(x) is [B, {self.out_dim}]: mimbench's feature grid mean-pooled (torchvision's avgpool), "
                        "as its probes use it; model.norm(model.features(x)) is the grid, channels last")


class ResNetEncoder(nn.Module):
    """torchvision ResNet-18/34/50 trunk without pooling and classifier; CIFAR-style stem by default.

    ``small_stem``: a 3x3 stride-1 conv and no max-pool (stride 8, for small images); otherwise
    the standard 7x7 stride-2 conv and 3x3 stride-2 max-pool (stride 32). ``out_dim`` is 512
    (ResNet-18/34) or 2048 (ResNet-50). The mask is not used: hidden pixels reach the trunk as
    zeros (the core zeroes them). BatchNorm caveat: in training mode the statistics are taken
    over the masked batch, and the running averages used in eval mode (probing unmasked images)
    come from masked images.
    """

    def __init__(self, in_channels: int, image_size: int, depth: Literal[18, 34, 50] = 18, small_stem: bool = True):
        super().__init__()
        builders = {18: resnet18, 34: resnet34, 50: resnet50}
        if depth not in builders:
            raise ValueError(f"depth must be one of 18, 34, 50, got {depth!r}")
        net = builders[depth](weights=None)
        self.depth, self.small_stem, self.in_channels = depth, small_stem, in_channels
        if small_stem:
            conv1, pool = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False), nn.Identity()
        else:
            conv1, pool = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False), net.maxpool
        nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
        self.stride = 8 if small_stem else 32
        self.out_dim = net.fc.in_features
        _require_divisible(image_size, self.stride)
        self.stem = nn.Sequential(conv1, net.bn1, net.relu, pool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, C, H, W] (hidden pixels already zeroed by the core) -> [B, out_dim, H/stride, W/stride]."""
        return self.blocks(images)[-1]

    def blocks(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The grid after layer1..layer4; with the small stem [B, 64 * e, H, W], [B, 128 * e, H/2, W/2],
        [B, 256 * e, H/4, W/4], [B, 512 * e, H/8, W/8] (e = 4 for ResNet-50, else 1); the standard
        stem divides every grid by 4 more."""
        outputs, x = [], self.stem(images)
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        return outputs

    def backbone(self):
        """torchvision's ``resnet{depth}`` (``fc`` an Identity; with the small stem, or other than 3
        input channels, its ``conv1`` replaced, and with the small stem no max-pool)."""
        state = renamed(self.state_dict(), [(r"stem\.0\.(\w+)", r"conv1.\1"), (r"stem\.1\.(\w+)", r"bn1.\1"),
                                            (r"layers\.(\d)\.(.*)", lambda m: f"layer{int(m[1]) + 1}.{m[2]}")])
        lines = ["import torchvision", "from torch import nn", f"model = torchvision.models.resnet{self.depth}(weights=None)"]
        if self.small_stem:
            lines += [f"model.conv1 = nn.Conv2d({self.in_channels}, 64, kernel_size=3, stride=1, padding=1, bias=False)",
                      "model.maxpool = nn.Identity()"]
        elif self.in_channels != 3:
            lines += [f"model.conv1 = nn.Conv2d({self.in_channels}, 64, kernel_size=7, stride=2, padding=3, bias=False)"]
        lines.append("model.fc = nn.Identity()")
        return Backbone(state, "torchvision", "\n".join(lines),
                        f"model(x) is [B, {self.out_dim}]: mimbench's feature grid mean-pooled (torchvision's avgpool), "
                        "as its probes use it")


@hookimpl
def mimbench_register_encoders(register) -> None:
    register("cnn", ConvEncoder)
    register("swin", SwinEncoder)
    register("resnet", ResNetEncoder)

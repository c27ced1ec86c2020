"""Vision Transformer components for SimMIM and MAE.

- encoder ``vit``: SimMIM (Xie et al., CVPR 2022). Every token whose patch is fully hidden is
  replaced by one learned mask token; the transformer sees all tokens.
- encoder ``mae``: MAE (He et al., CVPR 2022). Fully hidden tokens are dropped; the transformer
  sees the visible tokens only, and the full grid comes back with zeros where tokens were dropped.
- decoder ``mae``: MAE's lightweight transformer decoder, with a mask token at the hidden positions.

Shapes: B batch, C channels, H = W = image_size, p patch size (the stride), h = w = H / p,
N = h * w tokens, D model width.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mimbench.plugin import Backbone, Interval, hookimpl, renamed

#: Declared ranges of the sizes (they bound memory and time before anything is built).
PatchSize = Annotated[int, Interval(ge=1, le=1024)]
Width = Annotated[int, Interval(ge=1, le=8192)]
Depth = Annotated[int, Interval(ge=1, le=256)]
Heads = Annotated[int, Interval(ge=1, le=256)]
MlpRatio = Annotated[float, Interval(gt=0, le=64)]


# ----------------------------------------------------------------------------- shared helpers

def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding as in MAE: Tensor[grid * grid, dim], row-major tokens.

    The first dim/2 channels encode the column x, the last dim/2 the row y; each half is
    ``[sin(pos * omega), cos(pos * omega)]`` with ``omega_i = 10000 ** (-i / (dim / 4))``.
    """
    if dim % 4:
        raise ValueError(f"the sin-cos position embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # [D/4]
    y, x = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                          indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:  # [N] -> [N, D/2]
        angles = pos.flatten()[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(x), encode(y)], dim=1).float()


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """images [B, C, H, W] -> patches [B, N, p * p * C], each patch laid out (row, column, channel)."""
    b, c, hh, ww = images.shape
    h, w = hh // p, ww // p
    return images.reshape(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, p * p * c)


def unpatchify(patches: torch.Tensor, p: int, grid: int) -> torch.Tensor:
    """patches [B, N, p * p * C] (N = grid * grid) -> images [B, C, grid * p, grid * p]; inverse of patchify."""
    b = patches.shape[0]
    c = patches.shape[-1] // (p * p)
    x = patches.reshape(b, grid, grid, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, grid * p, grid * p)


def fully_hidden(mask: torch.Tensor, p: int) -> torch.Tensor:
    """mask [B, H, W] bool (True = hidden) -> [B, N] bool: True where all p * p pixels of a patch are hidden."""
    return patchify(mask.unsqueeze(1), p).all(dim=-1)


def check_sizes(image_size: int, patch_size: int, dim: int, depth: int, heads: int, mlp_ratio: float,
                sincos: bool, patch_name: str = "patch_size") -> None:
    """Raise ValueError, one line, for a size the transformer cannot take."""
    for name, value in [("image_size", image_size), (patch_name, patch_size), ("dim", dim),
                        ("depth", depth), ("heads", heads)]:
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not divisible by {patch_name} {patch_size}")
    if dim % heads:
        raise ValueError(f"dim {dim} is not divisible by heads {heads}")
    if sincos and dim % 4:
        raise ValueError(f"the sin-cos position embedding needs dim divisible by 4, got {dim}")
    if not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")


def init_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears (zero bias), LayerNorm ones/zeros, and the patch
    embedding's conv initialised like a linear layer on the flattened patch."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
            nn.init.zeros_(m.bias)


def token_init(t: torch.Tensor) -> torch.Tensor:
    """Truncated normal, std 0.02, cut at two standard deviations (mask tokens, learned positions)."""
    return nn.init.trunc_normal_(t, std=0.02, a=-0.04, b=0.04)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attention(LN(x)), then x + MLP(LN(x)). [B, N, D] -> [B, N, D]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention: [B, N, D] -> [B, N, D]."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B, heads, N, D/heads]
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The attention probabilities that :meth:`attention` applies to its input x [B, N, D] (after
        norm1), recomputed from queries and keys (the fused kernel does not return them): [B, heads, N, N]."""
        b, n, d = x.shape
        q, k, _ = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """``depth`` pre-norm blocks then a final LayerNorm: tokens [B, N, D] -> [B, N, D]."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.layers = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def each(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tokens after each block; the last one also through the final LayerNorm (= forward)."""
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        out[-1] = self.norm(x)
        return out


# ----------------------------------------------------------------------------- encoders

class _ViTBackbone(nn.Module):
    """Patch embedding + position embedding + transformer, shared by the SimMIM and MAE encoders."""

    uses_mask_token = False

    def __init__(self, in_channels: int, image_size: int, patch_size: PatchSize = 4, dim: Width = 128, depth: Depth = 4,
                 heads: Heads = 4, mlp_ratio: MlpRatio = 4.0, pos_embed: Literal["sincos", "learned"] = "sincos"):
        super().__init__()
        if pos_embed not in ("sincos", "learned"):
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        check_sizes(image_size, patch_size, dim, depth, heads, mlp_ratio, sincos=pos_embed == "sincos")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.out_dim, self.stride = dim, patch_size
        self.image_size, self.grid = image_size, image_size // patch_size
        self.in_channels, self.heads, self.mlp_ratio = in_channels, heads, mlp_ratio
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.transformer = Transformer(dim, depth, heads, mlp_ratio)
        init_weights(self)
        if pos_embed == "sincos":  # fixed: recomputed from the config, so not saved in checkpoints
            self.register_buffer("pos_embed", sincos_pos_embed(dim, self.grid)[None], persistent=False)
        else:
            self.pos_embed = nn.Parameter(token_init(torch.empty(1, self.grid**2, dim)))
        if self.uses_mask_token:
            self.mask_token = nn.Parameter(token_init(torch.empty(1, 1, dim)))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> patch tokens [B, N, D], no position embedding yet."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size}x{self.image_size} images, got "
                             f"{images.shape[-2]}x{images.shape[-1]}")
        return self.patch_embed(images).flatten(2).transpose(1, 2)

    def to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, D] -> feature grid [B, D, h, w]."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, self.grid, self.grid)

    def param_depths(self) -> tuple[dict[str, int], int]:
        """For layer-wise lr decay when fine-tuning: depth 0 for the embeddings, i + 1 for
        block i, depth + 1 for the final LayerNorm; and the number of blocks."""
        depth = len(self.transformer.layers)
        depths = {}
        for name, _ in self.named_parameters():
            if name.startswith("transformer.layers."):
                depths[name] = int(name.split(".")[2]) + 1
            elif name.startswith("transformer.norm."):
                depths[name] = depth + 1
            else:
                depths[name] = 0
        return depths, depth

    def blocks(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unmasked images [B, C, H, W] -> the grid [B, D, h, w] after each block; the last one is
        after the final LayerNorm too, so it equals ``forward(images)``."""
        return [self.to_grid(t) for t in self.transformer.each(self.embed(images) + self.pos_embed)]

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unmasked images [B, C, H, W] -> each block's attention over the N patch tokens (row major,
        no class token), [B, heads, N, N] per block, rows summing to 1: for diagnostics."""
        x = self.embed(images) + self.pos_embed
        maps = []
        for layer in self.transformer.layers:
            maps.append(layer.attention_map(layer.norm1(x)))
            x = layer(x)
        return maps

    def backbone(self):
        """timm's ``VisionTransformer`` without class token, pooling by mean (``global_pool='avg'``,
        ``fc_norm=False``): the same layers, so the same features; the fixed sin-cos position
        embedding becomes the values of timm's ``pos_embed``. The mask token is dropped."""
        state = dict(self.state_dict())
        state.setdefault("pos_embed", self.pos_embed)  # sincos: a buffer, not saved in checkpoints
        layer = r"transformer\.layers\.(\d+)\."
        state = renamed(state, [
            (r"mask_token", None), (r"pos_embed", "pos_embed"), (r"patch_embed\.(\w+)", r"patch_embed.proj.\1"),
            (layer + r"(norm1|norm2)\.(\w+)", r"blocks.\1.\2.\3"), (layer + r"(qkv|proj)\.(\w+)", r"blocks.\1.attn.\2.\3"),
            (layer + r"mlp\.0\.(\w+)", r"blocks.\1.mlp.fc1.\2"), (layer + r"mlp\.2\.(\w+)", r"blocks.\1.mlp.fc2.\2"),
            (r"transformer\.norm\.(\w+)", r"norm.\1"),
        ])
        args = dict(img_size=self.image_size, patch_size=self.stride, in_chans=self.in_channels, num_classes=0,
                    embed_dim=self.out_dim, depth=len(self.transformer.layers), num_heads=self.heads,
                    mlp_ratio=self.mlp_ratio, class_token=False, global_pool="avg", fc_norm=False)
        build = ("from timm.models.vision_transformer import VisionTransformer\n"
                 f"model = VisionTransformer({', '.join(f'{k}={v!r}' for k, v in args.items())})")
        return Backbone(state, "timm", build,
                        "model(x) is [B, D]: mimbench's feature grid mean-pooled, as its probes use it; "
                        "model.forward_features(x) is the grid as tokens [B, N, D], in row-major order")


class ViTEncoder(_ViTBackbone):
    """ViT for SimMIM: fully hidden patches become a learned mask token; all tokens are encoded."""

    uses_mask_token = True

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, C, H, W] (hidden pixels zeroed by the core), mask [B, H, W] bool or None
        -> features [B, D, H/p, W/p]. Partially hidden patches keep their (zeroed) pixels."""
        x = self.embed(images)  # [B, N, D]
        if mask is not None:
            x = torch.where(fully_hidden(mask, self.stride).unsqueeze(-1), self.mask_token, x)
        return self.to_grid(self.transformer(x + self.pos_embed))


class MAEEncoder(_ViTBackbone):
    """ViT for MAE: fully hidden patches are dropped, only visible tokens are encoded (zeros in their place)."""

    same_hidden_count = True  # the visible tokens of a batch must be as many in every image

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, C, H, W], mask [B, H, W] bool or None -> features [B, D, H/p, W/p], zero at every
        fully hidden patch. Every image must hide the same number of whole patches."""
        x = self.embed(images) + self.pos_embed  # [B, N, D]
        if mask is None:
            return self.to_grid(self.transformer(x))
        hidden = fully_hidden(mask, self.stride)  # [B, N]
        # The one host sync: the number of visible tokens sets a shape.
        low, high = torch.stack(hidden.sum(dim=1).aminmax()).tolist()
        if low != high:
            raise ValueError(
                f"mae encoder needs the same number of fully hidden {self.stride}x{self.stride} patches in every "
                f"image, got {low} to {high}; use masker random_token with patch_size {self.stride} "
                f"(the encoder's patch_size), or patch with mask_patch_size a multiple of {self.stride}")
        if high == 0:
            return self.to_grid(self.transformer(x))
        b, n, d = x.shape
        # Visible token ids, in grid order: a stable sort puts the False (visible) entries first.
        keep = hidden.to(torch.uint8).argsort(dim=1, stable=True)[:, : n - high]  # [B, n_visible]
        index = keep.unsqueeze(-1).expand(-1, -1, d)
        visible = self.transformer(x.gather(1, index))  # [B, n_visible, D]
        return self.to_grid(visible.new_zeros(b, n, d).scatter(1, index, visible))


# ----------------------------------------------------------------------------- decoder

class MAEDecoder(nn.Module):
    """MAE's lightweight decoder: project tokens, mask token at hidden patches, transformer, linear to pixels."""

    def __init__(self, in_dim: int, stride: int, out_channels: int, image_size: int, dim: Width = 128,
                 depth: Depth = 2, heads: Heads = 4, mlp_ratio: MlpRatio = 4.0):
        super().__init__()
        check_sizes(image_size, stride, dim, depth, heads, mlp_ratio, sincos=True, patch_name="stride")
        self.stride, self.grid = stride, image_size // stride
        self.embed = nn.Linear(in_dim, dim)
        self.transformer = Transformer(dim, depth, heads, mlp_ratio)
        self.pred = nn.Linear(dim, stride * stride * out_channels)
        init_weights(self)
        self.register_buffer("pos_embed", sincos_pos_embed(dim, self.grid)[None], persistent=False)
        self.mask_token = nn.Parameter(token_init(torch.empty(1, 1, dim)))

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features [B, in_dim, h, w], mask [B, H, W] bool or None -> prediction [B, C, H, W]."""
        x = self.embed(features.flatten(2).transpose(1, 2))  # [B, N, dim]
        if mask is not None:
            x = torch.where(fully_hidden(mask, self.stride).unsqueeze(-1), self.mask_token, x)
        x = self.transformer(x + self.pos_embed)
        return unpatchify(self.pred(x), self.stride, self.grid)  # [B, N, p*p*C] -> [B, C, H, W]


@hookimpl
def mimbench_register_encoders(register) -> None:
    register("vit", ViTEncoder)
    register("mae", MAEEncoder)


@hookimpl
def mimbench_register_decoders(register) -> None:
    register("mae", MAEDecoder)

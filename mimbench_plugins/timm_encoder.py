"""The ``timm`` encoder: any timm Vision Transformer, by model name, with SimMIM's mask token.

timm builds the model with the suite's image size and channels (``img_size``, ``in_chans``),
the ``patch_size`` given (else the model's own) and no classifier (``num_classes=0``); ``pretrained``
is false by default (true downloads timm's weights from the Hugging Face Hub). As in SimMIM, every
token whose patch is fully hidden is replaced by a learned mask token before the position
embedding; the transformer sees all tokens, and the feature grid is the patch tokens after the
final norm (class and register tokens dropped).

Shapes: B batch, C channels, S image size, p patch size (the stride), h = w = S / p, N = h * w,
P prefix (class and register) tokens, D the model's width.

timm is imported when the encoder is built (it takes seconds), so that mimbench works without it.
"""

from __future__ import annotations

import difflib
import importlib.util
from typing import Any

import torch
from torch import nn

from mimbench.plugin import Backbone, ConfigError, hookimpl, missing_extra, one_line
from mimbench_plugins.vit import PatchSize, fully_hidden, token_init

#: Parameters of the timm model that the feature grid does not go through (pooling and head).
HEAD_MODULES = ("fc_norm", "attn_pool", "head")


class TimmViTEncoder(nn.Module):
    """Any timm Vision Transformer (by model name) with SimMIM's mask token on fully hidden patches."""

    def __init__(self, in_channels: int, image_size: int, model: str = "vit_tiny_patch16_224",
                 patch_size: PatchSize | None = None, pretrained: bool = False, model_args: dict[str, Any] | None = None):
        super().__init__()
        if importlib.util.find_spec("timm") is None:
            raise ConfigError(missing_extra("encoder 'timm'", "timm", "timm"))
        import timm
        from timm.models.vision_transformer import VisionTransformer

        if patch_size is not None and patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        self.model_name, self.pretrained = model, pretrained
        self.create_args: dict[str, Any] = {"num_classes": 0, "img_size": image_size, "in_chans": in_channels,
                                            **({"patch_size": patch_size} if patch_size is not None else {}),
                                            **(model_args or {})}
        if not timm.is_model(model):
            close = difflib.get_close_matches(model, timm.list_models("vit*") + timm.list_models("deit*"), n=3)
            raise ValueError(f"unknown timm model {model!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                                  " (timm.list_models('vit*') lists them)"))
        try:
            self.vit = timm.create_model(model, pretrained=pretrained, **self.create_args)
        except TypeError as exc:  # e.g. a CNN: no img_size
            raise ValueError(f"timm model {model!r} is not a timm VisionTransformer (vit_*, deit_* models) or does "
                             f"not take these arguments: {exc}") from None
        except (OSError, RuntimeError) as exc:  # pretrained weights that cannot be downloaded or loaded
            raise ValueError(f"timm model {model!r} (pretrained={pretrained}): {one_line(exc)}") from None
        if not isinstance(self.vit, VisionTransformer):
            raise ValueError(f"timm model {model!r} is a {type(self.vit).__name__}, not a timm VisionTransformer "
                             f"(vit_*, deit_* models)")
        if getattr(self.vit, "dynamic_img_size", False):
            raise ValueError("model_args dynamic_img_size is not supported: the image size is the suite's")
        grid = self.vit.patch_embed.grid_size
        self.stride = int(self.vit.patch_embed.patch_size[0])
        if tuple(self.vit.patch_embed.patch_size) != (self.stride, self.stride) or image_size % self.stride:
            raise ValueError(f"image_size {image_size} is not divisible by the patch size "
                             f"{tuple(self.vit.patch_embed.patch_size)} (set patch_size)")
        self.grid = int(grid[0])
        self.out_dim = int(self.vit.embed_dim)
        self.mask_token = nn.Parameter(token_init(torch.empty(1, 1, self.out_dim)))
        for name in HEAD_MODULES:  # the grid never goes through them: frozen, kept for a strict export
            module = getattr(self.vit, name, None)
            if isinstance(module, nn.Module):
                module.requires_grad_(False)

    def tokens(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, C, S, S], mask [B, S, S] bool or None -> tokens [B, P + N, D] after the position
        embedding, the mask token in place of every fully hidden patch."""
        x = self.vit.patch_embed(images)  # [B, N, D]
        if mask is not None:
            hidden = fully_hidden(mask, self.stride).view(*x.shape[:-1], 1)
            x = torch.where(hidden, self.mask_token.to(x.dtype), x)
        return self.vit.norm_pre(self.vit.patch_drop(self.vit._pos_embed(x)))

    def to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, P + N, D] -> the patch tokens' grid [B, D, h, w]."""
        patches = tokens[:, self.vit.num_prefix_tokens:]
        return patches.transpose(1, 2).reshape(tokens.shape[0], self.out_dim, self.grid, self.grid)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, C, S, S] (hidden pixels zeroed by the core), mask [B, S, S] bool or None
        -> features [B, D, S/p, S/p]: the patch tokens after the blocks and the final norm."""
        return self.to_grid(self.vit.norm(self.vit.blocks(self.tokens(images, mask))))

    def blocks(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unmasked images -> the grid [B, D, h, w] after each block; the last one after the final
        norm too, so that it equals ``forward(images)``."""
        x, grids = self.tokens(images), []
        for block in self.vit.blocks:
            x = block(x)
            grids.append(x)
        grids[-1] = self.vit.norm(x)
        return [self.to_grid(t) for t in grids]

    def param_depths(self) -> tuple[dict[str, int], int]:
        """For layer-wise lr decay: 0 for the embeddings and tokens, i + 1 for block i, depth + 1
        for the final norm (and the unused head); and the number of blocks."""
        depth = len(self.vit.blocks)
        depths = {}
        for name, _ in self.named_parameters():
            if name.startswith("vit.blocks."):
                depths[name] = int(name.split(".")[2]) + 1
            elif name.startswith(("vit.norm.", *(f"vit.{m}." for m in HEAD_MODULES))):
                depths[name] = depth + 1
            else:
                depths[name] = 0
        return depths, depth

    def backbone(self):
        """The timm model's own state_dict (mask token dropped): it loads, strict, into
        ``timm.create_model(model, num_classes=0, img_size=..., patch_size=..., in_chans=...)``."""
        state = {name[len("vit."):]: value for name, value in self.state_dict().items() if name.startswith("vit.")}
        args = ", ".join(f"{key}={value!r}" for key, value in {"pretrained": False, **self.create_args}.items())
        return Backbone(
            state, "timm", f"import timm\nmodel = timm.create_model({self.model_name!r}, {args})",
            "model.forward_features(x)[:, model.num_prefix_tokens:] is mimbench's feature grid as tokens "
            "[B, N, D] in row-major order (mimbench's probes mean-pool it); model(x) pools it timm's way "
            f"(global_pool {self.vit.global_pool!r})")


@hookimpl
def mimbench_register_encoders(register) -> None:
    register("timm", TimmViTEncoder)

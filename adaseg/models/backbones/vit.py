"""Plain ViT (class token + learned absolute positions) with timm's parameter names.

Names follow ``timm/models/vision_transformer.py``: ``cls_token``, ``pos_embed`` (1, 1 + N, D),
``patch_embed.proj``, ``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.proj``,
``blocks.{i}.norm2``, ``blocks.{i}.mlp.fc1``, ``blocks.{i}.mlp.fc2``, ``norm``; the classifier
``head.*`` is not part of this trunk. A timm ``vit_*_patch16_224`` state dict therefore loads with
``strict=True`` (after dropping ``head.``); a checkpoint trained at another resolution has its
position grid resampled bilinearly by :meth:`VisionTransformer.adapt_timm_state_dict`, as
Segmenter does.

``forward(x)`` returns tokens, not a pyramid: (B, 1 + h*w, D) after the final ``norm``, class
token first, ``h, w = ceil(H / patch), ceil(W / patch)``.

The adaptive encoder every ViT-based model uses (Segmenter, SETR) is :meth:`VisionTransformer.prepare`
(patch embedding, patch validity, the gate's features) and :meth:`VisionTransformer.encode` (the
blocks as an :class:`~adaseg.models.adaptive.run.AdaptiveRun` loop: exits, and pausing that
removes paused patches from attention); the model owns the auxiliary decoders
(:func:`build_aux_decoders`) and passes them in, so its parameter names stay ``encoder.*`` and
``aux_decoders.*``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaseg.models.adaptive.base import EncoderInput
from adaseg.models.adaptive.run import AdaptiveRun, RunResult
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.backbones.swin import DropPath, Mlp

__all__ = ["VisionTransformer", "ViTInput", "Block", "build_aux_decoders", "resize_pos_embed", "token_validity",
           "vit_ti", "vit_s", "vit_b", "vit_tiny_cpu"]


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                     num_prefix: int = 1) -> torch.Tensor:
    """(1, num_prefix + gh*gw, D) -> (1, num_prefix + nh*nw, D); grid part resampled bilinearly."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    d = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bilinear", align_corners=False).to(pos_embed.dtype)
    return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)


def token_validity(padding_mask: torch.Tensor | None, patch: int, grid: tuple[int, int]) -> torch.Tensor | None:
    """(B, H, W) bool (True on padding) -> (B, h*w) bool, True where a patch holds any real pixel.

    Pixels added to reach whole patches count as padding. None in, None out; also None when
    every patch is real (the attention then needs no mask).
    """
    if padding_mask is None:
        return None
    h, w = grid
    real = (~padding_mask).float()[:, None]
    real = F.pad(real, (0, w * patch - real.shape[-1], 0, h * patch - real.shape[-2]))
    valid = F.max_pool2d(real, patch).flatten(1) > 0
    return None if bool(valid.all()) else valid


@dataclass
class ViTInput(EncoderInput):
    """Result of :meth:`VisionTransformer.prepare`: ``tokens`` (B, 1 + N, D) class token first,
    with positions; ``grid`` (h, w); ``valid`` (B, N) bool or None; ``input_size`` (H, W);
    ``gate_features`` (B, D) the mean of the real patches; ``token_shapes`` (1, 2) the grid."""

    tokens: torch.Tensor
    grid: tuple[int, int]
    valid: torch.Tensor | None
    input_size: tuple[int, int]


def build_aux_decoders(*, dim: int, num_classes: int, depth: int) -> nn.ModuleList:
    """PAUMER's 1x1 auxiliary decoders of a ``depth``-layer ViT: ``[l - 1]`` reads the patch
    tokens after layer l (pausing after layer K is moot), initialised as the ViT's linears."""
    decoders = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(depth - 1))
    for m in decoders:
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    return decoders


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection."""

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, n, D); key_valid: (B, n) bool, False for keys nobody may attend to (padding)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = None if key_valid is None else key_valid[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer layer: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim=dim, num_heads=num_heads)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), key_valid))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """``patch`` x ``patch`` conv with stride ``patch`` (timm's ``patch_embed.proj``)."""

    def __init__(self, *, patch: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class VisionTransformer(nn.Module):
    """ViT trunk without classifier.

    Args:
        img_size: training resolution; fixes the stored ``pos_embed`` grid (img_size / patch).
        patch_size: 16 for the paper backbones.
        embed_dim, depth, num_heads, mlp_ratio: the usual ViT sizes.
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
    """

    timm_head_prefixes = ("head.",)
    non_timm_prefixes: tuple[str, ...] = ()
    num_prefix_tokens = 1

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.patch_embed = PatchEmbed(patch=patch_size, dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            [Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, drop_path=rates[i]) for i in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.channels = {"tokens": embed_dim}
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's ViT init: trunc-normal(0.02) positions and linears, tiny class token, zero biases.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 3, H, W) -> tokens (B, 1 + h*w, D) with positions added, and the grid (h, w).

        The image is zero-padded at the right/bottom to a multiple of the patch size; the
        position grid is resampled bilinearly when (h, w) differs from ``grid_size``.
        """
        p = self.patch_size
        x = F.pad(x, (0, (-x.shape[-1]) % p, 0, (-x.shape[-2]) % p))
        x = self.patch_embed(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        pos = resize_pos_embed(self.pos_embed, self.grid_size, grid, self.num_prefix_tokens)
        return torch.cat([cls, x], dim=1) + pos, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + h*w, D) normalised tokens, class token first."""
        x, _ = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def prepare(self, images: torch.Tensor, padding_mask: torch.Tensor | None = None) -> ViTInput:
        """The adaptive encoder's input: :meth:`embed`, patch validity and the gate's features
        (no layer runs)."""
        tokens, grid = self.embed(images)
        valid = token_validity(padding_mask, self.patch_size, grid)
        patches = tokens[:, 1:]
        if valid is None:
            gate_features = patches.mean(1)
        else:
            weight = valid.to(patches.dtype).unsqueeze(-1)
            gate_features = (patches * weight).sum(1) / weight.sum(1).clamp(min=1)
        return ViTInput(gate_features=gate_features,
                        token_shapes=torch.tensor([grid], dtype=torch.long, device=images.device),
                        tokens=tokens, grid=grid, valid=valid, input_size=(images.shape[-2], images.shape[-1]))

    def encode(self, prep: ViTInput, *, aux_decoders: nn.ModuleList, settings: AdaptiveSettings,
               exit_plan: torch.Tensor | None, keep_aux: bool, final_norm: bool = True) -> RunResult:
        """Run the blocks as an adaptive encoder on a :meth:`prepare` output.

        Paused patches leave the token set (later layers neither update nor attend to them);
        the class token is never paused. ``aux_decoders[l - 1]`` scores the patches after
        layer l. Returns the run's result over the (B, h*w, D) patch map, final-normed unless
        ``final_norm`` is False (PAUMER's early exit reads the paused patches as their
        auxiliary decoder saw them, and norms only the active ones; recorded exits are
        always normed).
        """
        patches = prep.tokens[:, 1:]
        run = AdaptiveRun(patches, settings=settings, exit_plan=exit_plan, aux_decoders=aux_decoders,
                          padding=None if prep.valid is None else ~prep.valid, keep_aux=keep_aux,
                          paused_are_values=False, on_record=self.norm)
        run.carry["cls"] = prep.tokens[:, :1]
        for layer_no in run.layers():
            cls = run.carry["cls"]
            key_valid = None
            if run.active_padding is not None:  # the class token is always a valid key
                key_valid = torch.cat([cls.new_ones(cls.shape[0], 1, dtype=torch.bool), ~run.active_padding], dim=1)
            y = self.blocks[layer_no - 1](torch.cat([cls, run.tokens], dim=1), key_valid)
            run.carry["cls"] = y[:, :1]
            run.step(y[:, 1:])
        result = run.finish()
        if result.tokens is not None and final_norm:
            result.tokens = self.norm(result.tokens)
        return result

    def adapt_timm_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Resample a checkpoint's square ``pos_embed`` grid to this model's ``grid_size``."""
        pos = state_dict.get("pos_embed")
        if pos is None or pos.shape == self.pos_embed.shape or pos.ndim != 3 or pos.shape[-1] != self.embed_dim:
            return state_dict  # nothing to adapt; any other mismatch is reported by the loader
        n_grid = pos.shape[1] - self.num_prefix_tokens
        side = math.isqrt(n_grid)
        if side * side != n_grid:
            return state_dict
        out = dict(state_dict)
        out["pos_embed"] = resize_pos_embed(pos, (side, side), self.grid_size, self.num_prefix_tokens)
        return out


def vit_ti(**overrides) -> VisionTransformer:
    """ViT-Ti/16 (timm ``vit_tiny_patch16_224``): 192, 12 layers, 3 heads; 5.72M with head."""
    cfg = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, drop_path_rate=0.1)
    cfg.update(overrides)
    return VisionTransformer(**cfg)


def vit_s(**overrides) -> VisionTransformer:
    """ViT-S/16 (timm ``vit_small_patch16_224``): 384, 12 layers, 6 heads; 22.05M with head."""
    cfg = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, drop_path_rate=0.1)
    cfg.update(overrides)
    return VisionTransformer(**cfg)


def vit_b(**overrides) -> VisionTransformer:
    """ViT-B/16 (timm ``vit_base_patch16_224``): 768, 12 layers, 12 heads; 86.57M with head."""
    cfg = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, drop_path_rate=0.1)
    cfg.update(overrides)
    return VisionTransformer(**cfg)


def vit_tiny_cpu(**overrides) -> VisionTransformer:
    """CPU default: patch 8 at 128x128 (16x16 tokens), 128 channels, 6 layers, 4 heads; ~1.2M."""
    cfg = dict(img_size=128, patch_size=8, embed_dim=128, depth=6, num_heads=4, drop_path_rate=0.0)
    cfg.update(overrides)
    return VisionTransformer(**cfg)

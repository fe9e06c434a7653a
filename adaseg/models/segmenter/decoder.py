"""Segmenter's mask-transformer decoder (Strudel et al., ICCV 2021, Sec. 3.2).

Patch tokens from the encoder are projected to the decoder width and processed jointly with
K learned class embeddings by ``n_layers`` transformer layers. The decoder then projects the
patches and the class embeddings, L2-normalises both, and takes their scalar products: one
(h, w) mask per class, normalised over classes by a LayerNorm (``mask_norm``). Module names
follow the reference implementation (``cls_emb``, ``proj_dec``, ``blocks``, ``decoder_norm``,
``proj_patch``, ``proj_classes``, ``mask_norm``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaseg.models.backbones.vit import Block

__all__ = ["MaskTransformer"]


class MaskTransformer(nn.Module):
    """Class-embedding mask decoder.

    Args:
        num_classes: K semantic classes.
        in_dim: encoder token width.
        d_model: decoder width (Segmenter: the encoder width).
        n_layers: decoder layers (2 in Segmenter).
        n_heads: attention heads (Segmenter: d_model // 64).
        mlp_ratio: FFN hidden / d_model (4).
        drop_path_rate: stochastic depth over the decoder layers.
    """

    def __init__(self, *, num_classes: int, in_dim: int, d_model: int, n_layers: int = 2, n_heads: int,
                 mlp_ratio: float = 4.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.d_model = d_model
        self.proj_dec = nn.Linear(in_dim, d_model)
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, d_model))
        rates = [drop_path_rate * i / max(n_layers - 1, 1) for i in range(n_layers)]
        self.blocks = nn.ModuleList(
            [Block(dim=d_model, num_heads=n_heads, mlp_ratio=mlp_ratio, drop_path=rates[i]) for i in range(n_layers)]
        )
        self.decoder_norm = nn.LayerNorm(d_model)
        scale = d_model ** -0.5
        self.proj_patch = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.proj_classes = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.mask_norm = nn.LayerNorm(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.cls_emb, std=0.02)

    def forward(self, patches: torch.Tensor, grid: tuple[int, int], key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, h*w, in_dim) patch tokens (row-major) -> (B, K, h, w) class-mask logits.

        ``key_valid`` (B, h*w) bool marks real (non-padding) patches; padding patches are not
        attended to (the class embeddings are always valid).
        """
        b, n, _ = patches.shape
        if n != grid[0] * grid[1]:
            raise ValueError(f"{n} patch tokens do not form a {grid[0]}x{grid[1]} grid")
        masks = self.forward_tokens(patches, key_valid)  # (B, h*w, K)
        return masks.transpose(1, 2).reshape(b, self.num_classes, grid[0], grid[1])

    def forward_tokens(self, patches: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n, in_dim) any n patch tokens -> (B, n, K) their class-mask logits.

        The decoder is a transformer over the tokens it is given plus the class embeddings, so
        it runs on a subset of a grid's patches (PAUMER's early exit: only the active ones)
        with no notion of where they sit. ``key_valid`` (B, n) bool as in :meth:`forward`.
        """
        b, n, _ = patches.shape
        x = torch.cat([self.proj_dec(patches), self.cls_emb.expand(b, -1, -1)], dim=1)
        if key_valid is not None:
            key_valid = torch.cat([key_valid, key_valid.new_ones(b, self.num_classes)], dim=1)
        for blk in self.blocks:
            x = blk(x, key_valid)
        x = self.decoder_norm(x)
        patch_feat = F.normalize(x[:, :n] @ self.proj_patch, dim=-1)
        class_feat = F.normalize(x[:, n:] @ self.proj_classes, dim=-1)
        return self.mask_norm(patch_feat @ class_feat.transpose(1, 2))

"""Swin Transformer (patch 4, shifted windows) with timm's parameter names and layout.

Names follow the current ``timm/models/swin_transformer.py``: ``patch_embed.proj`` /
``patch_embed.norm``; stages ``layers.{i}`` whose *first* module is ``downsample`` (a
``PatchMerging`` with ``norm`` + bias-free ``reduction`` for i >= 1, nothing for stage 0);
blocks ``layers.{i}.blocks.{j}`` with ``norm1``, ``attn.relative_position_bias_table``,
``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``; final ``norm``. As in timm,
``relative_position_index`` is a non-persistent buffer (not in the state dict) and the shift
mask is not stored at all (it depends on the input size, so it is built per forward).

Arbitrary input sizes (segmentation): the image is zero-padded to a multiple of the patch
size; inside each block the normalised map is zero-padded to a multiple of the window, then
cyclically shifted (the order HF transformers' Swin and the original Swin-Seg use). When a
stage map is no larger than one window (``min(H, W) <= window``) the block does not shift, as in
timm, unless ``always_shift`` (the original Mask2Former / HF SwinBackbone behaviour). timm also
shrinks the window to such a map (with a resized bias table); here the window stays and the map
is zero-padded, as HF and the original Swin-Seg do. Both agree whenever every stage map is a
whole number of windows (e.g. 224 px input, window 7) -- the case the checkpoints come from.

``forward(x)`` returns ``{"s1": stride 32, "s2": 16, "s3": 8, "s4": 4}`` (B, C, h, w) maps:
``s1`` goes through timm's final ``norm``; ``s2..s4`` through per-output LayerNorms
``out_norms.s2..s4`` when ``out_norms=True`` (as Mask2Former's Swin does). Those three norms
are not timm keys: loading a timm checkpoint leaves them at their initial value (ones/zeros).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SwinTransformer", "swin_t", "swin_s", "swin_b", "swin_tiny_cpu", "relative_position_index"]


def relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) int64: row-major index into the (2w-1)^2 relative-bias table.

    Token a at (ya, xa), token b at (yb, xb): index ``(ya - yb + w - 1) * (2w - 1) + (xa - xb + w - 1)``.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def _partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of w -> (B * nW, w*w, C), windows in row-major order."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def _unpartition(windows: torch.Tensor, w: int, b: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of :func:`_partition`: (B * nW, w*w, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c)


@functools.lru_cache(maxsize=64)
def _shift_mask(hp: int, wp: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask: -100 between tokens from different pre-shift regions.

    Cached: it depends only on the padded map size, so every block of a stage (and every
    batch of the same size) reuses one constant tensor. Built outside inference mode so a
    mask first made under ``torch.inference_mode()`` can still be used in training.
    """
    with torch.inference_mode(False):
        return _build_shift_mask(hp, wp, window, shift, device)


def _build_shift_mask(hp: int, wp: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    region = torch.zeros(hp, wp, device=device)
    cuts = ((0, hp - window), (hp - window, hp - shift), (hp - shift, hp))
    cuts_w = ((0, wp - window), (wp - window, wp - shift), (wp - shift, wp))
    label = 0
    for y0, y1 in cuts:
        for x0, x1 in cuts_w:
            region[y0:y1, x0:x1] = label
            label += 1
    ids = _partition(region.view(1, hp, wp, 1), window).squeeze(-1)  # (nW, w*w)
    differ = ids[:, :, None] != ids[:, None, :]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative position bias."""

    def __init__(self, *, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        # Derived from ``window`` alone; non-persistent exactly as in current timm.
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B * nW, N, C) with N = window^2, windows image-major; mask: (nW, N, N) additive or None."""
        bw, n, c = x.shape
        heads = self.num_heads
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, heads).permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            nw = mask.shape[0]
            bias = bias + mask.unsqueeze(1)  # (nW, heads, N, N)
            if bw != nw:
                # x holds image 0's nW windows, then image 1's, ...: tile the mask to match.
                bias = bias.repeat(bw // nw, 1, 1, 1)
        # Everything 4-D on purpose: with 4-D q/k/v and a 4-D mask (size-1 dims broadcast) torch
        # takes its fused CPU attention kernel; a 5-D batch or a 3-D mask falls back to the
        # generic math path, about 2-3x slower for Swin's window shapes.
        q, k, v = self.qkv(x).view(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (B * nW, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (timm's ``Mlp`` names)."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or with p = 0)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class SwinBlock(nn.Module):
    """(S)W-MSA + MLP on a (B, H, W, C) map; ``shift`` is window // 2 for odd blocks."""

    def __init__(self, *, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float, drop_path: float,
                 always_shift: bool = False) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.always_shift = always_shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim=dim, num_heads=num_heads, window=window)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        win = self.window
        # timm skips the shift on a map no larger than one window; the segmentation Swin of the
        # original Mask2Former (and HF's SwinBackbone, always_partition=True) always shifts.
        shift = self.shift if (self.always_shift or min(h, w) > win) else 0
        pad_h, pad_w = (-h) % win, (-w) % win
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        mask = None
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = _shift_mask(hp, wp, win, shift, x.device)
        y = _unpartition(self.attn(_partition(x, win), mask), win, b, hp, wp)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return y[:, :h, :w, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self._attention(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat -> LayerNorm(4C) -> Linear(4C, 2C, no bias); halves H and W.

    Channel order of the concat is (y0,x0), (y1,x0), (y0,x1), (y1,x1): the original Swin order
    that timm keeps, so pretrained ``reduction`` weights line up.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        h, w = h + h % 2, w + w % 2
        # (B, h/2, 2[dy], w/2, 2[dx], C) -> (B, h/2, w/2, dx, dy, C): dy varies fastest.
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """``downsample`` (stage >= 1) then ``blocks``: timm's current stage layout."""

    def __init__(self, *, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 drop_paths: list[float], downsample: bool, always_shift: bool = False) -> None:
        super().__init__()
        in_dim = dim // 2 if downsample else dim
        self.downsample = PatchMerging(dim=in_dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinBlock(dim=dim, num_heads=num_heads, window=window, shift=0 if j % 2 == 0 else window // 2,
                      mlp_ratio=mlp_ratio, drop_path=drop_paths[j], always_shift=always_shift)
            for j in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` conv then LayerNorm; pads H, W to a multiple of ``patch``."""

    def __init__(self, *, patch: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, ceil(H/p), ceil(W/p), dim) channels-last."""
        p = self.patch
        x = F.pad(x, (0, (-x.shape[-1]) % p, 0, (-x.shape[-2]) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinTransformer(nn.Module):
    """Hierarchical Swin trunk without classifier.

    Args:
        embed_dim: channels of stage 0 (doubles per stage).
        depths: blocks per stage, e.g. Swin-T ``(2, 2, 6, 2)``.
        num_heads: heads per stage, e.g. ``(3, 6, 12, 24)``.
        window: attention window (7 for the ``*_window7_224`` checkpoints).
        patch: patch size of the embedding (4).
        mlp_ratio: MLP hidden / dim.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        out_norms: LayerNorm each of ``s2..s4`` (``s1`` always uses the final ``norm``).
        always_shift: shift odd blocks even on maps no larger than one window (the original
            Mask2Former / HF SwinBackbone behaviour; timm's, the default, does not).

    ``forward(x)``: (B, 3, H, W) -> dict ``s1..s4`` of (B, channels[k], ceil(H/stride), ...).
    """

    timm_head_prefixes = ("head.",)
    non_timm_prefixes = ("out_norms.",)

    def __init__(
        self,
        *,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window: int = 7,
        patch: int = 4,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        out_norms: bool = True,
        always_shift: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"Swin needs 4 stages, got depths={depths} num_heads={num_heads}")
        self.patch_embed = PatchEmbed(patch=patch, dim=embed_dim)
        rates = [drop_path_rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]
        dims = [embed_dim * 2 ** i for i in range(4)]
        stages, start = [], 0
        for i in range(4):
            stages.append(SwinStage(dim=dims[i], depth=depths[i], num_heads=num_heads[i], window=window,
                                    mlp_ratio=mlp_ratio, drop_paths=rates[start:start + depths[i]], downsample=i > 0,
                                    always_shift=always_shift))
            start += depths[i]
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[3])
        self.out_norms = nn.ModuleDict({k: nn.LayerNorm(dims[i]) for i, k in ((2, "s2"), (1, "s3"), (0, "s4"))}) if out_norms else None
        self.channels = {"s1": dims[3], "s2": dims[2], "s3": dims[1], "s4": dims[0]}
        self.strides = {k: patch * 2 ** i for i, k in enumerate(("s4", "s3", "s2", "s1"))}
        self.apply(_init_linear)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.patch_embed(x)
        feats = {}
        for i, key in enumerate(("s4", "s3", "s2", "s1")):
            x = self.layers[i](x)
            if key == "s1":
                y = self.norm(x)
            elif self.out_norms is not None:
                y = self.out_norms[key](x)
            else:
                y = x
            feats[key] = y.permute(0, 3, 1, 2).contiguous()
        return feats


def _init_linear(m: nn.Module) -> None:
    # timm's Swin init: trunc-normal(0.02) linear weights, zero biases; LayerNorm at (1, 0).
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def swin_t(**overrides) -> SwinTransformer:
    """Swin-T (timm ``swin_tiny_patch4_window7_224``): 96, (2, 2, 6, 2), (3, 6, 12, 24)."""
    cfg = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window=7, drop_path_rate=0.3)
    cfg.update(overrides)
    return SwinTransformer(**cfg)


def swin_s(**overrides) -> SwinTransformer:
    """Swin-S (timm ``swin_small_patch4_window7_224``): 96, (2, 2, 18, 2), (3, 6, 12, 24)."""
    cfg = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window=7, drop_path_rate=0.3)
    cfg.update(overrides)
    return SwinTransformer(**cfg)


def swin_b(**overrides) -> SwinTransformer:
    """Swin-B (timm ``swin_base_patch4_window7_224``): 128, (2, 2, 18, 2), (4, 8, 16, 32)."""
    cfg = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window=7, drop_path_rate=0.3)
    cfg.update(overrides)
    return SwinTransformer(**cfg)


def swin_tiny_cpu(**overrides) -> SwinTransformer:
    """CPU variant: 32 channels, (1, 1, 2, 1) blocks, (1, 2, 4, 8) heads, window 4; 1.43M params."""
    cfg = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window=4, drop_path_rate=0.0)
    cfg.update(overrides)
    return SwinTransformer(**cfg)

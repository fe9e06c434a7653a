"""Sliding-window inference for Segmenter on images larger than its training crop.

As in Segmenter's evaluation: windows of the training size slide over the image with a
given stride (the last window in each direction is flush with the border, so every pixel is
covered), each window is segmented independently, and the logits of overlapping windows are
averaged. Images smaller than a window are zero-padded to it; the padding is marked in the
model's ``padding_mask`` (padding patches are not attended to) and cropped away at the end.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from adaseg.models.adaptive.settings import AdaptiveSettings

__all__ = ["segmenter_inference_sliding", "window_starts"]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets along one axis: 0, stride, 2*stride, ... plus a final window ending at
    ``length`` if the regular grid stops short (a single 0 when ``length <= window``)."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be positive, got window={window} stride={stride}")
    if stride > window:
        raise ValueError(f"stride {stride} > window {window} would leave pixels unsegmented")
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or (height, width), got {v}")
    return v


@torch.no_grad()
def segmenter_inference_sliding(
    model,
    images: torch.Tensor,
    window,
    stride,
    *,
    settings: AdaptiveSettings | None = None,
    batch_size: int = 8,
) -> torch.Tensor:
    """Semantic logits of large images by sliding windows.

    Args:
        model: a :class:`~adaseg.models.segmenter.model.Segmenter` (call ``model.eval()`` first).
        images: (B, 3, H, W) normalised images.
        window: window size, int or (h, w) (the training crop).
        stride: step between windows, int or (h, w), at most the window.
        settings: as for a forward pass (None: full depth, no pausing); a per-image exit plan
            (B,) gives every window of image i exit i; ``"gate"`` decides per window; the
            pause plan applies to every window.
        batch_size: windows per forward pass.

    Returns:
        (B, K_cls, H, W) float32 logits averaged over the windows covering each pixel.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    b, _, h, w = images.shape
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    settings = AdaptiveSettings() if settings is None else settings
    if not isinstance(settings, AdaptiveSettings):
        raise TypeError(f"settings must be an adaseg.AdaptiveSettings or None, got {type(settings).__name__}")
    exits = per_image = settings.exits
    if settings.record_exits:
        raise ValueError("sliding-window inference decodes one exit per window, not recorded exits")
    if exits is not None and not isinstance(exits, (int, str)):
        per_image = torch.as_tensor(exits, dtype=torch.long).reshape(-1)
        if per_image.numel() != b:
            raise ValueError(f"exit plan has {per_image.numel()} entries for a batch of {b}")
    ph, pw = max(h, wh), max(w, ww)
    padded = images.new_zeros(b, 3, ph, pw)
    padded[:, :, :h, :w] = images
    pad_mask = None
    if (ph, pw) != (h, w):
        pad_mask = torch.ones(b, ph, pw, dtype=torch.bool, device=images.device)
        pad_mask[:, :h, :w] = False
    boxes = [(i, y, x) for i in range(b) for y in window_starts(ph, wh, sh) for x in window_starts(pw, ww, sw)]
    total = torch.zeros(b, model.num_classes, ph, pw, dtype=torch.float32, device=images.device)
    count = torch.zeros(b, 1, ph, pw, dtype=torch.float32, device=images.device)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        crops = torch.stack([padded[i, :, y : y + wh, x : x + ww] for i, y, x in chunk])
        mask = None if pad_mask is None else torch.stack([pad_mask[i, y : y + wh, x : x + ww] for i, y, x in chunk])
        if per_image is None or isinstance(per_image, (int, str)):
            chunk_exits = per_image
        else:
            chunk_exits = per_image[[i for i, _, _ in chunk]].to(images.device)
        out = model(crops, mask, replace(settings, exits=chunk_exits))
        logits = out.heads["sem_logits"].float()
        for (i, y, x), lg in zip(chunk, logits):
            total[i, :, y : y + wh, x : x + ww] += lg
            count[i, :, y : y + wh, x : x + ww] += 1
    return (total / count)[:, :, :h, :w]

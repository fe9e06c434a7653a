"""Segmenter's training loss: pixel cross-entropy, ECO-M2F's weighted sum over exits, and
PAUMER's auxiliary-decoder loss.

PAUMER (Sec. 2.2, Eq. 1-3): ``L = CE(y, y_hat) + lambda * CE(y, y_hat^l)`` with lambda = 0.1,
where ``y_hat^l`` is the 1x1 auxiliary decoder's prediction at the pause layer. The auxiliary
term is a per-token cross-entropy against the label at each patch's centre pixel (the same
:func:`~adaseg.models.adaptive.losses.aux_decoder_loss` Mask2Former uses), averaged over
the decoded tokens of every pause stage. The exit-weighted sum and the auxiliary term come
from :class:`~adaseg.models.adaptive.base.AdaptiveCriterion`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaseg.models.adaptive.base import AdaptiveCriterion
from adaseg.models.adaptive.losses import IGNORE
from adaseg.models.adaptive.output import AdaptiveOutput

__all__ = ["SegmenterCriterion"]


class SegmenterCriterion(AdaptiveCriterion):
    """Loss for :class:`~adaseg.models.segmenter.Segmenter` outputs.

    Args:
        num_classes: K_cls (labels outside 0..K_cls-1 other than 255 are an error).
        patch_size: the encoder's patch size (to place token centres on the label map).
        aux_weight: PAUMER's lambda (0.1).
    """

    def __init__(self, *, num_classes: int, patch_size: int, aux_weight: float = 0.1) -> None:
        super().__init__(aux_weight=aux_weight)
        self.num_classes = num_classes
        self.patch_size = patch_size

    def prepare_targets(self, outputs: AdaptiveOutput, targets: list[dict]) -> torch.Tensor:
        """Per image ``semantic`` (h, w) int64, 255 = ignore, smaller than the input when the
        batch is padded -> (B, H, W) padded with 255 (padded pixels are ignored)."""
        height, width = outputs.input_size
        if len(targets) != outputs.gate_features.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {outputs.gate_features.shape[0]}")
        maps = []
        for i, t in enumerate(targets):
            if "semantic" not in t:
                raise ValueError(f"target {i} has no 'semantic' map (needed by the Segmenter loss)")
            sem = t["semantic"].to(torch.long)
            h, w = sem.shape[-2:]
            if h > height or w > width:
                raise ValueError(f"target {i} of size {(h, w)} is larger than the input {(height, width)}")
            bad = (sem != IGNORE) & ((sem < 0) | (sem >= self.num_classes))
            if bool(bad.any()):
                raise ValueError(f"target {i} has labels outside 0..{self.num_classes - 1} (and 255): "
                                 f"{sorted(set(sem[bad].tolist()))[:5]}")
            maps.append(F.pad(sem, (0, width - w, 0, height - h), value=IGNORE))
        return torch.stack(maps)

    def head_loss(self, heads: dict, prepared: torch.Tensor) -> dict:
        """``loss_ce`` (= ``total``): pixel cross-entropy of one exit's ``sem_logits``."""
        ce = self._ce(heads["sem_logits"], prepared)
        return {"loss_ce": ce, "total": ce}

    def aux_labels(self, outputs: AdaptiveOutput, prepared: torch.Tensor) -> torch.Tensor:
        height, width = outputs.input_size
        grid_h, grid_w = (int(v) for v in outputs.token_shapes[0])
        p = self.patch_size
        # Token centres are placed on the patch-padded label map (padding = ignore).
        return F.pad(prepared, (0, grid_w * p - width, 0, grid_h * p - height), value=IGNORE)

    def _ce(self, logits: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        if not bool((semantic != IGNORE).any()):
            return logits.sum() * 0.0  # nothing labelled: zero loss that keeps the graph
        return F.cross_entropy(logits.float(), semantic, ignore_index=IGNORE)

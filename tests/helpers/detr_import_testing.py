"""A ResNet-50 DETR as ``adaseg import-weights --hf`` writes it, made without transformers'
model: transformers' ``DetrConfig`` (ResNet-50 backbone, d 256, 6 + 6 layers, 100 queries)
translated and built by adaseg, every float tensor perturbed so that no zero or one init hides a
mapping error. Needs transformers (callers skip without it)."""

from __future__ import annotations

from pathlib import Path

import torch


def write_resnet50_detr(path: Path, id2label: dict[int, str]) -> None:
    """Write the checkpoint (kind ``detr``, its import config, ``class_names``) to ``path``."""
    import transformers

    from adaseg.models.hf.detr_config import translate_detr
    from adaseg.models.hf.detr_import import DETR_KIND, build_detr
    from adaseg.storage.checkpoint import save_checkpoint

    cfg = transformers.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False,
                                  backbone_config=transformers.ResNetConfig(out_features=["stage4"]),
                                  id2label=dict(id2label))
    config = translate_detr(cfg.to_dict(), where="test")
    torch.manual_seed(0)
    source = build_detr(config)
    with torch.no_grad():
        for name, t in [*source.named_parameters(), *source.named_buffers()]:
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else t + 0.05 * torch.randn_like(t))
    save_checkpoint(path, source.state_dict(), kind=DETR_KIND, config=config, extra={"class_names": config["class_names"]})

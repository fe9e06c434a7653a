"""ResNet (v1.5: stride on the 3x3 conv) with timm's parameter names.

Module names follow timm's ``timm/models/resnet.py`` (``conv1``/``bn1`` stem, ``layer1..4``,
blocks with ``conv1..3``/``bn1..3`` and ``downsample.0`` (conv) / ``downsample.1`` (BN)), so a
timm ``resnet50`` state dict loads with ``strict=True`` once its classifier (``fc.*``) is dropped
(see :func:`adaseg.models.backbones.timm_checkpoint.load_timm_checkpoint`).

Outputs are multi-scale: ``forward(x)`` returns ``{"s1": stride 32, "s2": 16, "s3": 8, "s4": 4}``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResNet", "resnet50", "resnet_tiny"]


class BasicBlock(nn.Module):
    """Two 3x3 convs; ``expansion`` 1. Names as timm's ``BasicBlock``."""

    expansion = 1

    def __init__(self, *, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act2(y + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 with ``expansion`` 4. Names as timm's ``Bottleneck``."""

    expansion = 4

    def __init__(self, *, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.act3(y + shortcut)


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    # timm's ``downsample_conv``: Sequential(conv, bn) -> keys ``downsample.0`` / ``downsample.1``.
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """ResNet trunk without classifier.

    Args:
        block: ``"bottleneck"`` (ResNet-50) or ``"basic"`` (ResNet-18/34 style, CPU variants).
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)``.
        widths: bottleneck/basic widths per stage (output channels = width * expansion).
        stem_width: channels of the 7x7 stem conv.
        frozen_bn: keep every BatchNorm in eval mode with frozen affine parameters (what
            Mask2Former's R50 uses: detectron2 ``FrozenBN``); statistics are never updated.

    ``forward(x)``: (B, 3, H, W) -> dict ``s1..s4`` of (B, channels[k], H/stride, W/stride)
    with strides 32, 16, 8, 4 (rounded up as the convolutions do).
    """

    # timm keys this trunk deliberately does not have (the classifier).
    timm_head_prefixes = ("fc.",)
    # Keys the trunk has that a timm checkpoint cannot have (none for ResNet).
    non_timm_prefixes: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        block: str = "bottleneck",
        layers: tuple[int, ...] = (3, 4, 6, 3),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        stem_width: int = 64,
        frozen_bn: bool = False,
    ) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {block!r}")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"ResNet needs 4 stages, got layers={layers} widths={widths}")
        block_cls = _BLOCKS[block]
        self.frozen_bn = frozen_bn
        self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = stem_width
        out_channels = []
        for i, (n_blocks, width) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block_cls(in_ch=in_ch, width=width, stride=stride))
                in_ch = width * block_cls.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            out_channels.append(in_ch)
        # stage 1 (layer1) is stride 4 -> "s4"; stage 4 (layer4) is stride 32 -> "s1".
        self.channels = {"s4": out_channels[0], "s3": out_channels[1], "s2": out_channels[2], "s1": out_channels[3]}
        self.strides = {"s1": 32, "s2": 16, "s3": 8, "s4": 4}
        self._init_weights()
        if frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.requires_grad_(False)
                    m.bias.requires_grad_(False)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch so every block starts as identity
        # (timm's ``zero_init_last``), which stabilises training from scratch.
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn().weight)

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {"s1": c5, "s2": c4, "s3": c3, "s4": c2}


def resnet50(**overrides) -> ResNet:
    """ResNet-50 (timm ``resnet50``): bottleneck, (3, 4, 6, 3), 25.56M params with its fc."""
    cfg = dict(block="bottleneck", layers=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem_width=64)
    cfg.update(overrides)
    return ResNet(**cfg)


def resnet_tiny(**overrides) -> ResNet:
    """CPU default: basic blocks, one per stage, widths (16, 32, 64, 128); 0.31M params."""
    cfg = dict(block="basic", layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem_width=16)
    cfg.update(overrides)
    return ResNet(**cfg)

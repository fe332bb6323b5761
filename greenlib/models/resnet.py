"""Post-activation ResNets for 32x32 inputs.

Two layouts from RepDistiller, one class:

- CIFAR ResNets (He et al. 2016, sec. 4.2; RepDistiller ``resnet.py``): a 3x3 stem and three
  stages of ``n`` basic blocks, ``depth = 6n + 2``; widths 16-32-64 after a 16-channel stem.
  The "x4" models (CRD's resnet8x4 / resnet32x4) use a 32-channel stem and 64-128-256 stages.
- ResNet18/34/50 with a CIFAR stem (kuangliu/pytorch-cifar, RepDistiller ``resnetv2.py``): a 3x3,
  stride-1 stem of 64 channels, no max-pool, four stages of 64-128-256-512 (x4 for bottlenecks).

Shortcuts are a 1x1 conv + BN where the shape changes, else identity.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .base import PostActBlock, Stage, ZooModel, conv_bn, global_pool, init_conv_bn


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return conv_bn(in_ch, out_ch, kernel=1, stride=stride, relu=False)


class BasicBlock(PostActBlock):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, + shortcut, ReLU."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1):
        super().__init__()
        self.out_channels = planes
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_ch, planes, stride)

    def pre_activation(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out)) + self.shortcut(x)


class Bottleneck(PostActBlock):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4, + shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1):
        super().__init__()
        out_ch = planes * self.expansion
        self.out_channels = out_ch
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_ch, out_ch, stride)

    def pre_activation(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out)) + self.shortcut(x)


class ResNet(ZooModel):
    """A 3x3 stem, then one stage per entry of ``widths``; the first stage keeps the resolution,
    each later one halves it in its first block.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        blocks_per_stage: number of blocks in each stage.
        widths: each stage's ``planes`` (its output has ``planes * block.expansion`` channels).
        stem_width: channels of the stem conv.
        num_classes: logits.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks_per_stage: Sequence[int],
                 widths: Sequence[int], stem_width: int, num_classes: int = 100):
        super().__init__()
        if len(blocks_per_stage) != len(widths):
            raise ValueError(f"blocks_per_stage {list(blocks_per_stage)} and widths {list(widths)} differ in length")
        self.stem = conv_bn(3, stem_width)
        in_ch = stem_width
        stages = []
        for i, (n, planes) in enumerate(zip(blocks_per_stage, widths)):
            blocks = []
            for j in range(n):
                blocks.append(block(in_ch, planes, stride=2 if (i > 0 and j == 0) else 1))
                in_ch = blocks[-1].out_channels
            stages.append(Stage(*blocks))
        self.stages = nn.ModuleList(stages)
        self.head = global_pool()
        self.classifier = nn.Linear(in_ch, num_classes)  # PyTorch's default init, as the sources
        self._feature_channels = (stem_width, *(w * block.expansion for w in widths), in_ch)
        init_conv_bn(self)


def cifar_resnet(depth: int, widths: Sequence[int] = (16, 32, 64), stem_width: int = 16,
                 num_classes: int = 100) -> ResNet:
    """The CIFAR ResNet of ``depth = 6n + 2`` layers: three stages of ``n`` basic blocks."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ...); got {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, (n, n, n), widths, stem_width, num_classes)


# Blocks per stage of the ImageNet-depth ResNets (He et al. 2016, Table 1).
IMAGENET_LAYOUTS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


def resnet_cifar_stem(depth: int, num_classes: int = 100) -> ResNet:
    """ResNet18/34/50 with a CIFAR stem (3x3 stride-1 conv, no max-pool), kuangliu style."""
    if depth not in IMAGENET_LAYOUTS:
        raise ValueError(f"no ResNet-{depth} layout; accepted: {', '.join(map(str, IMAGENET_LAYOUTS))}")
    block, layout = IMAGENET_LAYOUTS[depth]
    return ResNet(block, layout, (64, 128, 256, 512), 64, num_classes)

"""ShuffleNetV1 and ShuffleNetV2 for CIFAR, as in CRD/RepDistiller (``ShuffleV1``, ``ShuffleV2``).

Both start with a 1x1 conv to 24 channels at full resolution (no stride, no max-pool) and have
three stages that each halve the resolution in their first block (32 -> 16 -> 8 -> 4).
Weights keep PyTorch's default init, as the sources (they call no init).

- V1 (Zhang et al. 2018), groups g=3, stage widths 240-480-960, 4-8-4 blocks: grouped 1x1 conv,
  channel shuffle, 3x3 depthwise, grouped 1x1; a stride-2 block concatenates a 3x3 average-pooled
  shortcut, the others add the input. The first block's 1x1 conv (24 input channels) is ungrouped.
- V2 (Ma et al. 2018), 1x: stage widths 116-232-464, 3-7-3 basic blocks after a down-sampling
  block, then a 1x1 conv to 1024. Blocks split the channels in halves, transform one, concatenate
  and shuffle with 2 groups.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import PostActBlock, Stage, ZooModel, conv_bn, global_pool


class ChannelShuffle(nn.Module):
    """(N, g*k, H, W) -> (N, k*g, H, W): channel ``i*k + j`` moves to ``j*g + i``."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)


class ShuffleV1Block(PostActBlock):
    """ShuffleNetV1 unit; with stride 2 it outputs ``out_ch`` new channels plus the input's."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int):
        super().__init__()
        mid = out_ch // 4
        g1 = 1 if in_ch == 24 else groups  # the sources leave the very first 1x1 conv ungrouped
        self.conv1 = nn.Conv2d(in_ch, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(g1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_ch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.concat = stride == 2
        self.shortcut = nn.AvgPool2d(3, 2, 1) if self.concat else nn.Identity()

    def pre_activation(self, x: Tensor) -> Tensor:
        out = self.shuffle(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.concat:  # fixed at construction
            return torch.cat([out, self.shortcut(x)], 1)
        return out + x


class ShuffleNetV1(ZooModel):
    """ShuffleNetV1 for 32x32 inputs (CRD: ``widths=(240, 480, 960), blocks=(4, 8, 4), groups=3``)."""

    def __init__(self, widths: Sequence[int] = (240, 480, 960), blocks: Sequence[int] = (4, 8, 4),
                 groups: int = 3, num_classes: int = 100):
        super().__init__()
        self.stem = conv_bn(3, 24, kernel=1)
        in_ch, stages = 24, []
        for width, n in zip(widths, blocks):
            # The stride-2 first block concatenates its input: it adds ``width - in_ch`` channels.
            units = [ShuffleV1Block(in_ch, width - in_ch, 2, groups)]
            units += [ShuffleV1Block(width, width, 1, groups) for _ in range(n - 1)]
            stages.append(Stage(*units))
            in_ch = width
        self.stages = nn.ModuleList(stages)
        self.head = global_pool()
        self.classifier = nn.Linear(in_ch, num_classes)
        self._feature_channels = (24, *widths, in_ch)


class ShuffleV2Down(nn.Module):
    """Stride-2 unit: both branches see the whole input; outputs concatenated and shuffled."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        mid = out_ch // 2
        self.left = nn.Sequential(
            conv_bn(in_ch, in_ch, kernel=3, stride=2, groups=in_ch, relu=False),
            conv_bn(in_ch, mid, kernel=1),
        )
        self.right = nn.Sequential(
            conv_bn(in_ch, mid, kernel=1),
            conv_bn(mid, mid, kernel=3, stride=2, groups=mid, relu=False),
            conv_bn(mid, mid, kernel=1),
        )
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(torch.cat([self.left(x), self.right(x)], 1))


class ShuffleV2Block(nn.Module):
    """Stride-1 unit: keep half the channels, transform the other half (1x1-BN-ReLU, 3x3 dw-BN,
    1x1-BN-ReLU), concatenate, shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(conv_bn(half, half, kernel=1),
                                    conv_bn(half, half, kernel=3, groups=half, relu=False))
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        keep, change = x.chunk(2, dim=1)
        return self.shuffle(torch.cat([keep, F.relu(self.bn3(self.conv3(self.branch(change))))], 1))

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The output and its value before the branch's last ReLU, in the output's channel order.

        The sources return the preact unshuffled; shuffling it keeps ``relu(preact) == out``
        (the kept half is already non-negative: every unit ends with ReLUs or passes them on).
        """
        keep, change = x.chunk(2, dim=1)
        pre = self.shuffle(torch.cat([keep, self.bn3(self.conv3(self.branch(change)))], 1))
        return F.relu(pre), pre


class ShuffleNetV2(ZooModel):
    """ShuffleNetV2 for 32x32 inputs (CRD: 1x, ``widths=(116, 232, 464, 1024), blocks=(3, 7, 3)``)."""

    def __init__(self, widths: Sequence[int] = (116, 232, 464, 1024), blocks: Sequence[int] = (3, 7, 3),
                 num_classes: int = 100):
        super().__init__()
        self.stem = conv_bn(3, 24, kernel=1)
        in_ch, stages = 24, []
        for width, n in zip(widths[:-1], blocks):
            stages.append(Stage(ShuffleV2Down(in_ch, width), *(ShuffleV2Block(width) for _ in range(n))))
            in_ch = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(conv_bn(in_ch, widths[-1], kernel=1), global_pool())
        self.classifier = nn.Linear(widths[-1], num_classes)
        self._feature_channels = (24, *widths)

"""Wide ResNets WRN-depth-k (Zagoruyko & Komodakis 2016; RepDistiller ``wrn.py``).

Pre-activation basic blocks (BN-ReLU-conv, twice), ``depth = 6n + 4``: a 16-channel 3x3 stem and
three stages of ``n`` blocks of 16k-32k-64k channels, a final BN-ReLU, global average pooling.
Dropout is off (the sources' default, dropRate=0). Where the width changes, the shortcut is a
bare 1x1 conv applied to the block's activated input.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import ZooModel, global_pool, init_conv_bn


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, + shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.shortcut = None if (in_ch == out_ch and stride == 1) else nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The output and ``bn1(x)``: the block's input before its ReLU."""
        pre = self.bn1(x)
        act = F.relu(pre)  # not in place: ``pre`` is returned
        out = self.conv2(self.relu(self.bn2(self.conv1(act))))
        return out + (x if self.shortcut is None else self.shortcut(act)), pre

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_preact(x)[0]


class WideResNet(ZooModel):
    """WRN-``depth``-``widen``; ``depth = 6n + 4``.

    Features are pre-activation tensors here, so the ``preact`` variant of a stage's output is
    the BN that starts the next stage (or the final BN), as in the sources: ``bn(f)``, no ReLU.
    Unlike the sources, ``extract`` reuses the BN outputs the forward computes instead of
    applying those BNs a second time (which, in training mode, updated their running stats twice).
    """

    def __init__(self, depth: int, widen: int, num_classes: int = 100):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, ...); got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        in_ch, stages = 16, []
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(*(WideBasicBlock(in_ch if j == 0 else w, w, stride if j == 0 else 1)
                                          for j in range(n))))
            in_ch = w
        self.stages = nn.ModuleList(stages)
        self.bn = nn.BatchNorm2d(in_ch)
        self.head = global_pool()
        self.classifier = nn.Linear(in_ch, num_classes)
        self._feature_channels = (16, *widths, in_ch)
        init_conv_bn(self)
        nn.init.zeros_(self.classifier.bias)  # weight: PyTorch's default, as the sources

    def extract(self, x: Tensor, preact: bool = False) -> tuple[list[Tensor], Tensor]:
        x = self.stem(x)
        feats, pres = [x], []
        for stage in self.stages:
            for j, block in enumerate(stage):
                if j == 0:  # its bn1 of the stage's input is the previous feature's preact
                    x, pre_in = block.forward_preact(x)
                    pres.append(pre_in)
                else:
                    x = block(x)
            feats.append(x)
        pre = self.bn(x)
        vec = self.head(F.relu(pre))
        if preact:
            feats = [feats[0], *pres[1:], pre]
        feats.append(vec)
        return feats, self.classifier(vec)

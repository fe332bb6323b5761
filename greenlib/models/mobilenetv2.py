"""MobileNetV2 for CIFAR as in CRD/RepDistiller (``mobile_half``: expansion 6, width x0.5).

CRD's "MobileNetV2" student (Tian et al. 2020, Tables 1-2) is RepDistiller's ``mobile_half``,
from "Knowledge Distillation via Route Constrained Optimization": the ImageNet layout of Sandler
et al. 2018 with widths halved, a stride-2 stem (32 -> 16), final map 2x2, a 1x1 conv to 1280
channels and ``Linear(1280, num_classes)``. Unlike torchvision, every inverted residual block has
its 1x1 expansion conv, also where the expansion is 1.
"""
from __future__ import annotations

from torch import Tensor, nn

from .base import Stage, ZooModel, conv_bn, global_pool, init_conv_bn, init_linear_normal

# (expansion t, channels c, blocks n, first stride s) per block group (Sandler et al., Table 2;
# ``None`` = the model's expansion; strides of the CIFAR version).
SETTINGS: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Block groups merged into each feature stage (RepDistiller reads features after groups 1, 2, 4, 6).
STAGE_GROUPS: tuple[tuple[int, ...], ...] = ((0, 1), (2,), (3, 4), (5, 6))


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 project-BN (linear); + input when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int):
        super().__init__()
        mid = in_ch * expansion
        self.residual = stride == 1 and in_ch == out_ch
        self.conv = nn.Sequential(
            conv_bn(in_ch, mid, kernel=1),
            conv_bn(mid, mid, kernel=3, stride=stride, groups=mid),
            conv_bn(mid, out_ch, kernel=1, relu=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.residual:  # fixed at construction, not data-dependent
            return x + self.conv(x)
        return self.conv(x)

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Linear bottleneck: no ReLU on the output, so the preact is the output itself."""
        out = self(x)
        return out, out


class MobileNetV2(ZooModel):
    """MobileNetV2 with ``expansion`` and ``width_mult`` (CRD: 6 and 0.5) for 32x32 inputs."""

    def __init__(self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100):
        super().__init__()
        in_ch = int(32 * width_mult)
        self.stem = conv_bn(3, in_ch, kernel=3, stride=2)
        groups = []
        for t, c, n, s in SETTINGS:
            out_ch = int(c * width_mult)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(in_ch, out_ch, s if j == 0 else 1, expansion if t is None else t))
                in_ch = out_ch
            groups.append(blocks)
        self.stages = nn.ModuleList(Stage(*(b for g in idx for b in groups[g])) for idx in STAGE_GROUPS)
        last_ch = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.head = nn.Sequential(conv_bn(in_ch, last_ch, kernel=1), global_pool())
        self.classifier = nn.Linear(last_ch, num_classes)
        stage_channels = tuple(int(SETTINGS[idx[-1]][1] * width_mult) for idx in STAGE_GROUPS)
        self._feature_channels = (int(32 * width_mult), *stage_channels, last_ch)
        init_conv_bn(self)
        init_linear_normal(self.classifier)

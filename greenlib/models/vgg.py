"""VGG with BatchNorm for CIFAR (RepDistiller ``vgg.py``, after Wei Yang's pytorch-classification).

Five conv groups (3x3 conv with bias -> BN -> ReLU); a 2x2 max-pool after each of the first three
groups, so the fourth and fifth both run at 4x4 (the sources skip the pool between them on 32x32
inputs); then global average pooling and a single ``Linear(512, num_classes)``: no VGG fully
connected stack.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .base import PostActBlock, ZooModel, global_pool, init_conv_bn, init_linear_normal

# Channels of each conv in each of the five groups (Simonyan & Zisserman 2015, Table 1;
# "S" is RepDistiller's 8-layer variant).
CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "S": ((64,), (128,), (256,), (512,), (512,)),  # vgg8
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),  # vgg11
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),  # vgg13
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),  # vgg16
    "E": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),  # vgg19
}
CONFIG_OF_DEPTH: dict[int, str] = {8: "S", 11: "A", 13: "B", 16: "D", 19: "E"}


def _conv_group(in_ch: int, widths: Sequence[int]) -> list[nn.Module]:
    """conv-BN-ReLU per width, without the last ReLU (the caller applies it, keeping the preact)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_ch, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_ch = w
    return layers[:-1]


class VGGStage(PostActBlock):
    """An optional 2x2 max-pool, then a conv group; the output is ReLU of the group's last BN."""

    def __init__(self, in_ch: int, widths: Sequence[int], pool_first: bool):
        super().__init__()
        pool = [nn.MaxPool2d(2, 2)] if pool_first else []
        self.layers = nn.Sequential(*pool, *_conv_group(in_ch, widths))

    def pre_activation(self, x: Tensor) -> Tensor:
        return self.layers(x)


class VGG(ZooModel):
    """VGG-BN for 32x32 inputs; ``depth`` in 8, 11, 13, 16, 19."""

    def __init__(self, depth: int, num_classes: int = 100):
        super().__init__()
        if depth not in CONFIG_OF_DEPTH:
            raise ValueError(f"no VGG-{depth}; accepted depths: {', '.join(map(str, CONFIG_OF_DEPTH))}")
        groups = CONFIGS[CONFIG_OF_DEPTH[depth]]
        self.stem = nn.Sequential(*_conv_group(3, groups[0]), nn.ReLU(inplace=True))
        # Stage i pools its input for i = 1..3 (32 -> 16 -> 8 -> 4); the last group keeps 4x4.
        self.stages = nn.ModuleList(
            VGGStage(groups[i - 1][-1], groups[i], pool_first=i <= 3) for i in range(1, 5)
        )
        self.head = global_pool()
        self.classifier = nn.Linear(groups[-1][-1], num_classes)
        self._feature_channels = tuple(g[-1] for g in groups) + (groups[-1][-1],)
        init_conv_bn(self)
        init_linear_normal(self.classifier)

"""VGG for CIFAR as in NNI 2.x's model-compression examples (zoo names ``nni-vgg16``, ``nni-vgg19``).

The paper trains its baselines with NNI and prunes and quantizes them "following the default
practice of NNI" (Section 4.1): its VGG16/VGG19 rows of Table 3 are NNI's
``examples/model_compress/models/cifar10/vgg.py`` (NNI v2.3 to v2.10, unchanged; commit
84507248 = tag v2.3), which ``examples/model_compress/pruning/basic_pruners_torch.py`` builds
(``VGG(depth=16)``, line 111). Unlike RepDistiller's VGG of this zoo (``vgg16``, what CRD's
distillation tables use):

- ``feature``: 3x3 conv (no bias) -> BN -> ReLU per width, a 2x2 max-pool after each of the first
  four groups (vgg.py lines 7-10 and 29-42), so the last group runs at 2x2;
- then ``AvgPool2d(2)`` to 1x1 (line 46) and a two-layer head ``classifier``:
  ``Linear(512, 512) -> BatchNorm1d -> ReLU -> Linear(512, num_classes)`` (lines 21-26);
- init (lines 51-63): conv N(0, 2 / (k*k*out)), BatchNorm2d weight **0.5** and bias 0, Linear
  N(0, 0.01) with bias 0; BatchNorm1d keeps PyTorch's (1, 0).

NNI hard-codes ``num_classes = 10`` (line 20); here it is the builder's argument. Module names
are NNI's (``feature.0`` is the first conv, ``feature.24`` VGG16's eighth), so the layer names
of NNI's pruning example select the same layers here (:mod:`greenlib.prune.scope`). With 100
classes: VGG16 15,033,892 parameters and 627 MFLOPs per image, VGG19 20,344,868 and 797 MFLOPs
(torch's FLOP counter, :func:`greenlib.models.model_info`; ``tests/test_models.py`` checks both).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import ZooModel

# NNI's defaultcfg (vgg.py lines 6-11): conv widths, "M" = 2x2 max-pool.
NNI_CONFIGS: dict[int, tuple[int | str, ...]] = {
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}
HIDDEN = 512  # the head's hidden width (vgg.py line 22)


class NNIVGG(ZooModel):
    """NNI's CIFAR VGG-BN; ``depth`` in 16, 19.

    ``forward`` is NNI's (``feature`` -> AvgPool2d(2) -> flatten -> ``classifier``), module calls
    only, so NNI's tracer names every layer as NNI's example does. :meth:`extract` gives the
    features of the zoo's other models: each conv group's output (before its max-pool; the first
    group is the stem), then the pooled vector the head reads; with ``preact=True`` each later
    group's last BatchNorm output.
    """

    def __init__(self, depth: int, num_classes: int = 100):
        super().__init__()
        if depth not in NNI_CONFIGS:
            raise ValueError(f"no NNI VGG-{depth}; accepted depths: {', '.join(map(str, NNI_CONFIGS))}")
        layers: list[nn.Module] = []
        group_ends: list[int] = []  # index in `feature` of each group's last ReLU
        widths: list[int] = []
        in_ch = 3
        for v in NNI_CONFIGS[depth]:
            if v == "M":
                group_ends.append(len(layers) - 1)
                widths.append(in_ch)
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(v),
                           nn.ReLU(inplace=True)]
                in_ch = v
        group_ends.append(len(layers) - 1)
        widths.append(in_ch)
        self.feature = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(in_ch, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(inplace=True),
                                        nn.Linear(HIDDEN, num_classes))
        self._group_ends = tuple(group_ends)
        self._feature_channels = (*widths, in_ch)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # N(0, 2/(k*k*out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def _pool(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` for images ``(N, 3, 32, 32)``."""
        return self.classifier(self._pool(self.feature(x)))

    def extract(self, x: Tensor, preact: bool = False) -> tuple[list[Tensor], Tensor]:
        """Features (each conv group's output, then the pooled vector) and logits; see ZooModel."""
        feats: list[Tensor] = []
        ends = set(self._group_ends)
        for i, layer in enumerate(self.feature):
            if i in ends:  # the group's last ReLU, applied out of place to keep its input
                out = F.relu(x)
                feats.append(x if preact and feats else out)  # the first group is the stem: never preact
                x = out
            else:
                x = layer(x)
        vec = self._pool(x)
        feats.append(vec)
        return feats, self.classifier(vec)

    def feature_modules(self) -> nn.ModuleList:
        """The conv layers (``feature``): what FSP and AB pre-train."""
        return nn.ModuleList([self.feature])

"""What every zoo model offers, and the blocks and weight init the families share.

Every model is a :class:`ZooModel`: ``stem -> stages -> head -> classifier``. ``forward(x)``
returns logits; ``extract(x)`` also returns the intermediate features the distillers of
RepDistiller read (its ``is_feat=True``). Only plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` /
``nn.Linear`` hold parameters and residual sums are written with ``+``, so NNI's pruners and
speed-up see every layer; no branch depends on tensor values, so a forward can be captured in a
CUDA graph (a test traces every model with ``torch.fx`` to check it).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ZooModel(nn.Module):
    """A CIFAR classifier laid out as stem -> stages -> head -> classifier.

    A subclass sets, in ``__init__``:

    - ``stem``: the image -> the first feature map;
    - ``stages``: an ``nn.ModuleList``; each stage has ``forward(x)`` and
      ``forward_preact(x) -> (out, preact)``;
    - ``head``: the last stage's output -> the pooled feature vector ``(N, C)``;
    - ``classifier``: the ``nn.Linear`` from that vector to the logits;
    - ``_feature_channels``: the channels of each tensor :meth:`extract` returns.
    """

    stem: nn.Module
    stages: nn.ModuleList
    head: nn.Module
    classifier: nn.Linear
    _feature_channels: tuple[int, ...]

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` for images ``x`` of shape ``(N, 3, H, W)``."""
        return self.extract(x)[1]

    def extract(self, x: Tensor, preact: bool = False) -> tuple[list[Tensor], Tensor]:
        """Features and logits, as RepDistiller's ``model(x, is_feat=True, preact=preact)``.

        The features are the stem's output, each stage's output and, last, the pooled vector
        ``(N, C)`` the classifier reads. With ``preact=True`` each stage's output is replaced by
        its value before the final ReLU (what AB distils); the stem and the vector are unchanged.
        """
        x = self.stem(x)
        feats = [x]
        for stage in self.stages:
            if preact:
                x, pre = stage.forward_preact(x)
                feats.append(pre)
            else:
                x = stage(x)
                feats.append(x)
        vec = self.head(x)
        feats.append(vec)
        return feats, self.classifier(vec)

    def feature_channels(self) -> list[int]:
        """Channels of each tensor :meth:`extract` returns (the last is the vector's length), as
        built: pruning that removes channels does not update them."""
        return list(self._feature_channels)

    def feature_modules(self) -> nn.ModuleList:
        """The modules that compute the features (stem and stages), as RepDistiller's
        ``get_feat_modules``: what FSP and AB pre-train before distillation."""
        return nn.ModuleList([self.stem, *self.stages])


class Stage(nn.Sequential):
    """Blocks run in order; :meth:`forward_preact` also returns the last block's preact."""

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        *body, last = self
        for block in body:
            x = block(x)
        return last.forward_preact(x)


class PostActBlock(nn.Module):
    """A block whose output is ``ReLU(pre_activation(x))`` (residual sum, BN output, ...)."""

    def pre_activation(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.pre_activation(x))

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.pre_activation(x)
        return F.relu(pre), pre


def global_pool() -> nn.Sequential:
    """Global average pooling to a ``(N, C)`` vector.

    The sources pool with a fixed window (8 for ResNets, 4 for ShuffleNets, ...) equal to the
    last map's size on 32x32 inputs; an adaptive pool gives the same numbers there and also works
    for other input sizes.
    """
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BN [-> ReLU]."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def init_conv_bn(model: nn.Module) -> None:
    """The sources' init: conv weights Kaiming-normal (fan_out, ReLU gain), i.e. N(0, 2/(k*k*out));
    conv biases 0; BatchNorm weight 1, bias 0. Linear layers are left to each family."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_linear_normal(linear: nn.Linear, std: float = 0.01) -> None:
    """N(0, std^2) weights and zero bias (VGG and MobileNetV2 in the sources)."""
    nn.init.normal_(linear.weight, 0.0, std)
    nn.init.zeros_(linear.bias)

"""The zoo: every model name -> its builder. Adding a model is one line here.

Builders take ``num_classes`` (keyword) and return a :class:`~greenlib.models.base.ZooModel`.
The names are ``greenlib.config.ZOO_NAMES`` (a test keeps the two equal, in order).
"""
from __future__ import annotations

from functools import partial
from types import MappingProxyType
from typing import Callable, Mapping

from torch import nn

from .mobilenetv2 import MobileNetV2
from .nni_vgg import NNIVGG
from .resnet import cifar_resnet, resnet_cifar_stem
from .shufflenet import ShuffleNetV1, ShuffleNetV2
from .vgg import VGG
from .wrn import WideResNet

MODELS: Mapping[str, Callable[..., nn.Module]] = MappingProxyType({
    # VGG-BN, CIFAR layout (RepDistiller vgg8_bn ... vgg19_bn)
    "vgg8": partial(VGG, 8),
    "vgg11": partial(VGG, 11),
    "vgg13": partial(VGG, 13),
    "vgg16": partial(VGG, 16),
    "vgg19": partial(VGG, 19),
    # NNI's CIFAR VGG (examples/model_compress/models/cifar10/vgg.py): the paper's baselines, pruning, quantization
    "nni-vgg16": partial(NNIVGG, 16),
    "nni-vgg19": partial(NNIVGG, 19),
    # CIFAR ResNets, 16-32-64 (He et al. 2016, sec. 4.2)
    "resnet8": partial(cifar_resnet, 8),
    "resnet14": partial(cifar_resnet, 14),
    "resnet20": partial(cifar_resnet, 20),
    "resnet32": partial(cifar_resnet, 32),
    "resnet44": partial(cifar_resnet, 44),
    "resnet56": partial(cifar_resnet, 56),
    "resnet110": partial(cifar_resnet, 110),
    # CRD's wide CIFAR ResNets: 32-channel stem, 64-128-256
    "resnet8x4": partial(cifar_resnet, 8, widths=(64, 128, 256), stem_width=32),
    "resnet32x4": partial(cifar_resnet, 32, widths=(64, 128, 256), stem_width=32),
    # Wide ResNets WRN-depth-k
    "wrn-16-1": partial(WideResNet, 16, 1),
    "wrn-16-2": partial(WideResNet, 16, 2),
    "wrn-40-1": partial(WideResNet, 40, 1),
    "wrn-40-2": partial(WideResNet, 40, 2),
    # ImageNet-depth ResNets with a CIFAR stem (kuangliu/pytorch-cifar)
    "resnet18": partial(resnet_cifar_stem, 18),
    "resnet34": partial(resnet_cifar_stem, 34),
    "resnet50": partial(resnet_cifar_stem, 50),
    # Mobile models as CRD uses them
    "mobilenetv2": partial(MobileNetV2, expansion=6, width_mult=0.5),
    "shufflenetv1": ShuffleNetV1,
    "shufflenetv2": ShuffleNetV2,
})


# The zoo model each of the paper's model names stands for in its NNI-based rows (Tables 3 and 5:
# baselines, pruning, quantization, trained with NNI's example models). Its distillation rows
# (VGG13 -> VGG8, ...) are RepDistiller's models, the zoo's plain names.
NNI_PAPER_MODELS: Mapping[str, str] = MappingProxyType({"VGG16": "nni-vgg16", "VGG19": "nni-vgg19"})


def nni_zoo_name(paper_model: str) -> str:
    """The zoo name of a model of the paper's baseline/pruning/quantization rows: ``"VGG16"`` ->
    ``"nni-vgg16"``; other names lower-cased (``"ResNet18"`` -> ``"resnet18"``)."""
    return NNI_PAPER_MODELS.get(paper_model, paper_model.lower())


def build_model(name: str, num_classes: int = 100) -> nn.Module:
    """A freshly initialised zoo model ``name`` with ``num_classes`` logits.

    Raises ValueError for a name not in :data:`MODELS` (the message lists the accepted names)
    or a ``num_classes`` that is not a positive int.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(MODELS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive int")
    return MODELS[name](num_classes=num_classes)

"""Search spaces sized for 32x32 inputs: name -> :class:`SpaceSpec` (the supernet and the fixed model).

A space is built from a :class:`SpaceSize` (the notebook's ``width``, ``cells``, ``blocks``,
``retrain_width``, ``retrain_cells``); each space reads only the entries it uses
(:meth:`SpaceSpec.size_config`, which is what a run's config records).

- ``darts``: NNI's hub DARTS space (``nni.nas.hub.pytorch.DARTS``, the paper's "default CNN search
  space"), CIFAR stem, ``cells`` cells of 4 nodes over 7 operations, ``width`` channels in the first
  stage. NNI hard-codes 10 classes for ``dataset='cifar'``; the classifier is replaced for the
  dataset's classes, in the supernet and in the rebuilt model. The exported architecture is the
  normal and reduction cell; as in DARTS, the fixed model stacks it ``retrain_cells`` times at
  ``retrain_width`` channels (DARTS: searched at 8 cells x 16 channels, retrained at 20 x 36).
- ``proxyless``: NNI's hub ProxylessNAS space (``nni.nas.hub.pytorch.ProxylessNAS``: MBConv blocks,
  kernel 3/5/7 x expansion 3/6 per block, searched depth per stage) with a CIFAR stem: stem stride
  1 and the first downsampling stage at stride 1 (as CIFAR versions of MobileNetV2 do), so a 32x32
  image ends at 4x4 rather than 1x1. ``width`` is the first searched stage's channels (the hub's 16;
  the other widths scale with it) and ``blocks`` the most blocks per searched stage (the hub's 4).
  The paper's "PyramidNet with modifications" space is not described in the paper; this stands in
  for it. The fixed model is the searched network itself (no retrain_* sizes).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

from torch import nn

from .backend import import_nni, quiet


class SpaceError(ValueError):
    """A space name, size or architecture that cannot be built; one line naming the value."""


@dataclass(frozen=True)
class SpaceSize:
    """How big a space is. Every space reads the entries it needs (see the module docstring)."""

    width: int = 16  # channels of the first searched stage
    cells: int = 8  # DARTS: cells in the supernet
    blocks: int = 4  # ProxylessNAS: most blocks per searched stage
    retrain_width: int = 16  # DARTS: channels of the retrained network's first stage
    retrain_cells: int = 8  # DARTS: cells of the retrained network


@dataclass(frozen=True)
class SpaceSpec:
    """One search space: the supernet for a search and the fixed model for an exported architecture."""

    name: str
    description: str  # one line for tables and captions
    size_keys: tuple[str, ...]  # the SpaceSize entries this space reads (recorded in run configs)
    build: Callable[[SpaceSize, int], nn.Module]  # (size, num_classes) -> nni ModelSpace
    fixed: Callable[[Mapping[str, Any], SpaceSize, int], nn.Module]  # (architecture, size, num_classes)
    check: Callable[[SpaceSize], None]  # raises SpaceError for a size the space cannot build

    def size_config(self, size: SpaceSize) -> dict[str, int]:
        return {k: getattr(size, k) for k in self.size_keys}


def _need(name: str, value: int, least: int, space: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise SpaceError(f"{space} space: {name}={value!r} is not accepted; accepted: an int >= {least}")


# --- DARTS (NNI hub) -------------------------------------------------------------------------
def _check_darts(size: SpaceSize) -> None:
    # NNI splits the cells over 3 stages (n // 3 each): fewer than 3 leaves a stage empty
    _need("width", size.width, 4, "darts")
    _need("cells", size.cells, 3, "darts")
    _need("retrain_width", size.retrain_width, 4, "darts")
    _need("retrain_cells", size.retrain_cells, 3, "darts")


def _with_classes(model: nn.Module, num_classes: int) -> nn.Module:
    """NNI's DARTS space hard-codes 10 classes for CIFAR: a fresh linear classifier with ``num_classes``."""
    old = model.classifier
    model.classifier = nn.Linear(old.in_features, num_classes)
    model.num_labels = num_classes
    return model


def _darts_space(size: SpaceSize, num_classes: int) -> nn.Module:
    from nni.nas.hub.pytorch import DARTS

    return _with_classes(DARTS(width=size.width, num_cells=size.cells, dataset="cifar"), num_classes)


def _darts_fixed(arch: Mapping[str, Any], size: SpaceSize, num_classes: int) -> nn.Module:
    from nni.nas.hub.pytorch import DARTS

    space = DARTS(width=size.retrain_width, num_cells=size.retrain_cells, dataset="cifar")
    return _with_classes(space.freeze(dict(arch)), num_classes)


# --- ProxylessNAS (NNI hub blocks, CIFAR stem) ------------------------------------------------
# The hub's widths (stem, first block, six searched stages, feature mix) at width 16, and which
# searched stages downsample: the hub downsamples in stages 2, 3, 4 and 6 after a stride-2 stem;
# here the stem and stage 2 keep the resolution (32 -> 16 -> 8 -> 4).
PROXYLESS_WIDTHS: tuple[int, ...] = (32, 16, 32, 40, 80, 96, 192, 320, 1280)
PROXYLESS_DOWNSAMPLE: tuple[bool, ...] = (False, False, False, True, True, False, True, False)
PROXYLESS_KERNELS: tuple[int, ...] = (3, 5, 7)
PROXYLESS_EXPANSIONS: tuple[int, ...] = (3, 6)


def _check_proxyless(size: SpaceSize) -> None:
    _need("width", size.width, 4, "proxyless")
    _need("blocks", size.blocks, 1, "proxyless")


_PROXYLESS_CLASS = None


def _proxyless_class():
    """The ModelSpace class, defined on first use so that importing greenlib.nas does not import NNI."""
    global _PROXYLESS_CLASS
    if _PROXYLESS_CLASS is not None:
        return _PROXYLESS_CLASS
    from nni.nas.hub.pytorch.proxylessnas import (ConvBNReLU, DepthwiseSeparableConv,
                                                  inverted_residual_choice_builder, make_divisible, reset_parameters)
    from nni.nas.nn.pytorch import ModelSpace, MutableBatchNorm2d, Repeat

    class ProxylessCifar(ModelSpace):
        """NNI's ProxylessNAS space with a stride-1 stem and stage 2 at stride 1 (32x32 -> 4x4)."""

        def __init__(self, num_labels: int = 100, width: int = 16, blocks: int = 4):
            super().__init__()
            widths = [make_divisible(w * width / 16, 8) for w in PROXYLESS_WIDTHS]
            self.stem = ConvBNReLU(3, widths[0], stride=1, norm_layer=MutableBatchNorm2d)
            layers: list[nn.Module] = [DepthwiseSeparableConv(widths[0], widths[1], kernel_size=3, stride=1)]
            for stage in range(2, 8):
                builder = inverted_residual_choice_builder(list(PROXYLESS_EXPANSIONS), list(PROXYLESS_KERNELS),
                                                           PROXYLESS_DOWNSAMPLE[stage], widths[stage - 1],
                                                           widths[stage], f"s{stage}")
                # the hub searches the depth of stages 2-6 and keeps one block in stage 7
                searched_depth = stage < 7 and blocks > 1
                layers.append(Repeat(builder, (1, blocks), label=f"s{stage}_depth") if searched_depth
                              else builder(0))
            self.blocks = nn.Sequential(*layers)
            self.feature_mix_layer = ConvBNReLU(widths[7], widths[8], kernel_size=1, norm_layer=MutableBatchNorm2d)
            self.global_avg_pooling = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(widths[8], num_labels)
            reset_parameters(self, bn_momentum=0.1, bn_eps=1e-3)

        def forward(self, x):
            x = self.feature_mix_layer(self.blocks(self.stem(x)))
            return self.classifier(self.global_avg_pooling(x).flatten(1))

    _PROXYLESS_CLASS = ProxylessCifar
    return ProxylessCifar


def _proxyless_space(size: SpaceSize, num_classes: int) -> nn.Module:
    return _proxyless_class()(num_labels=num_classes, width=size.width, blocks=size.blocks)


def _proxyless_fixed(arch: Mapping[str, Any], size: SpaceSize, num_classes: int) -> nn.Module:
    return _proxyless_space(size, num_classes).freeze(dict(arch))


SPACES: Mapping[str, SpaceSpec] = MappingProxyType({
    "darts": SpaceSpec("darts", "NNI hub DARTS space (CIFAR stem), the paper's default CNN search space",
                       ("width", "cells", "retrain_width", "retrain_cells"), _darts_space, _darts_fixed,
                       _check_darts),
    "proxyless": SpaceSpec("proxyless", "NNI hub ProxylessNAS space with a CIFAR stem (32x32 -> 4x4); stands in "
                           "for the paper's unspecified modified PyramidNet", ("width", "blocks"),
                           _proxyless_space, _proxyless_fixed, _check_proxyless),
})


def get(name: str) -> SpaceSpec:
    """The space ``name``; SpaceError naming it and the accepted ones."""
    if name not in SPACES:
        raise SpaceError(f"unknown search space {name!r}; accepted: {', '.join(SPACES)}")
    return SPACES[name]


def build_space(name: str, size: SpaceSize, num_classes: int) -> nn.Module:
    """The (mutable) NNI model space ``name`` at ``size`` with ``num_classes`` logits."""
    spec = get(name)
    spec.check(size)
    import_nni()
    with quiet():
        return spec.build(size, num_classes)


def build_fixed(name: str, architecture: Mapping[str, Any], size: SpaceSize, num_classes: int) -> nn.Module:
    """The fixed model an exported ``architecture`` of space ``name`` describes, freshly initialised.

    Raises SpaceError for an unknown space, a bad size or an architecture the space does not accept.
    """
    spec = get(name)
    spec.check(size)
    import_nni()
    try:
        with quiet():
            return spec.fixed(architecture, size, num_classes)
    except (KeyError, ValueError, TypeError) as e:
        raise SpaceError(f"{name} space: the architecture does not fit it ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e

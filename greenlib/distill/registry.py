"""The distillers, by name, and how one is built for a teacher/student pair. Adding one is a line here.

    distiller = build("CRD", teacher="resnet56", student="resnet20", train_labels=ds.train_y)

The names are RepDistiller's README names (the CRD paper's tables), in its order; they are also
``greenlib.config``'s choices for the notebook's ``methods`` (a test keeps the two equal).
"""
from __future__ import annotations

from functools import lru_cache
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from ..models import build_model
from .ab import AB
from .at import AT
from .base import Distiller, IncompatiblePairError, Pair, Shape
from .cc import CC
from .crd import CRD
from .fitnet import FitNet
from .fsp import FSP
from .ft import FT
from .kd import KD
from .nst import NST
from .pkt import PKT
from .rkd import RKD
from .sp import SP
from .vid import VID

DISTILLERS: Mapping[str, type[Distiller]] = MappingProxyType({
    cls.name: cls for cls in (KD, FitNet, AT, SP, CC, VID, RKD, PKT, AB, FT, FSP, NST, CRD)
})


def names() -> list[str]:
    """The 13 method names, in RepDistiller's order."""
    return list(DISTILLERS)


def get(method: str) -> type[Distiller]:
    """The distiller class called ``method``; ValueError lists the accepted names."""
    if method not in DISTILLERS:
        raise ValueError(f"unknown distillation method {method!r}; accepted: {', '.join(DISTILLERS)}")
    return DISTILLERS[method]


@lru_cache(maxsize=None)
def feature_shapes(model_name: str, num_classes: int = 100) -> tuple[Shape, ...]:
    """Per-sample shapes of ``extract``'s features for zoo model ``model_name`` on 32x32 images.

    Found by one forward of two blank images in eval mode (shapes do not depend on the weights).
    Raises ValueError for an unknown model. The random state is put back after the throw-away weights
    are drawn: a distiller's modules, built after this, are drawn the same whether or not the shapes
    were cached already (a grid job's first build, or a notebook's after ``check_plan``).
    """
    with torch.random.fork_rng(devices=[]):
        model = build_model(model_name, num_classes=num_classes).eval()
    with torch.no_grad():
        feats, _ = model.extract(torch.zeros(2, 3, 32, 32))
    return tuple(tuple(f.shape[1:]) for f in feats)


def make_pair(teacher: str, student: str, train_labels: Tensor, num_classes: int = 100) -> Pair:
    return Pair(teacher, student, feature_shapes(teacher, num_classes), feature_shapes(student, num_classes),
                train_labels.detach().cpu().long())


def build(method: str, teacher: str, student: str, train_labels: Tensor, num_classes: int = 100,
          **hparams: Any) -> Distiller:
    """``method``'s distiller for ``teacher -> student``, with RepDistiller's defaults updated by ``hparams``.

    Raises ValueError for an unknown method, model or hyper-parameter, and
    :class:`IncompatiblePairError` when the method cannot connect the two networks' features.
    """
    cls = get(method)
    return cls(make_pair(teacher, student, train_labels, num_classes), **hparams)


def check_plan(pairs: Iterable[tuple[str, str]], methods: Iterable[str], num_classes: int = 100) -> None:
    """Build every (pair, method) once, on a stand-in label set, so that an unknown name or an
    incompatible pair fails before any training; the error lists every incompatible combination."""
    labels = torch.arange(num_classes)
    methods = list(methods)
    for m in methods:
        get(m)
    problems = []
    for teacher, student in pairs:
        for m in methods:
            try:
                build(m, teacher, student, labels, num_classes)
            except IncompatiblePairError as e:
                problems.append(str(e))
    if problems:
        raise IncompatiblePairError(f"{len(problems)} incompatible (pair, method): " + "; ".join(problems))

"""What every distiller is: a loss on student and teacher outputs, its auxiliary modules, its defaults.

A distiller is an ``nn.Module`` built for one teacher/student :class:`Pair`. Its parameters (a
FitNet regressor, CRD's embedding heads, ...) are trained with the student and checkpointed with it;
its buffers (CRD's memory bank) are checkpointed too. ``forward(s, t)`` takes the two networks'
:class:`Outputs` on one batch and returns the method's own loss, unweighted; :meth:`Distiller.total_loss`
adds the cross-entropy and the weights, as RepDistiller's ``gamma * CE + alpha * KD + beta * loss``.

Features are what ``ZooModel.extract`` returns: ``feats[0]`` the stem's output, ``feats[1:-1]`` the
stages' outputs (pre-activations when the distiller sets ``preact``), ``feats[-2]`` the last
stage's map, ``feats[-1]`` the pooled vector the classifier reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

Shape = tuple[int, ...]
"""One feature's shape without the batch dimension: ``(C, H, W)`` for a map, ``(D,)`` for a vector."""


class IncompatiblePairError(ValueError):
    """A distiller cannot connect this teacher's features to this student's (one-line message)."""


@dataclass
class Outputs:
    """One network's outputs on a batch, as a distiller reads them.

    ``index`` holds the batch's positions in the training set (CRD's memory bank reads them); it
    is the same tensor in the student's and the teacher's outputs, None where no loader gave it.
    """

    feats: list[Tensor]
    logits: Tensor
    index: Tensor | None = None


@dataclass(frozen=True)
class Pair:
    """What a distiller is built for: the two zoo models' feature shapes and the training labels.

    ``t_shapes`` / ``s_shapes`` are the per-sample shapes of ``extract``'s features (the same with
    ``preact=True``). ``train_labels`` (CPU int64, one per training image) let CRD draw its
    negatives from the other classes; ``n_data`` is their number.
    """

    teacher: str
    student: str
    t_shapes: tuple[Shape, ...]
    s_shapes: tuple[Shape, ...]
    train_labels: Tensor

    @property
    def n_data(self) -> int:
        return int(self.train_labels.numel())

    def incompatible(self, method: str, why: str) -> IncompatiblePairError:
        return IncompatiblePairError(f"{method} cannot distil {self.teacher} -> {self.student}: {why}")


class Distiller(nn.Module):
    """One distillation method for one :class:`Pair` (RepDistiller's ``distiller_zoo`` entry).

    Subclasses set the class attributes and implement :meth:`forward` (and, with ``pretrains``,
    :meth:`pretrain_loss`); ``__init__`` checks the pair and raises :class:`IncompatiblePairError`
    before building anything the pair cannot use.

    - ``name``: the method's name in tables (RepDistiller's README), e.g. ``"KD"``.
    - ``reference``: the paper it comes from.
    - ``defaults``: every hyper-parameter and its default (RepDistiller's published values);
      ``ce_weight`` (its ``-r``) and ``loss_weight`` (``-b``; ``-a`` for KD) in all of them.
      Names are flat and distinct from the run config's other keys: they go into it as they are.
    - ``preact``: read the stages' pre-activations (AB).
    - ``distills``: the distillation stage adds this loss to the cross-entropy. False for AB and
      FSP: in RepDistiller they act through their pre-training stage only (``loss_kd = 0`` after).
    - ``pretrains``: there is a pre-training stage (AB, FT, FSP: RepDistiller's ``init``).
    - ``pretrains_student``: that stage trains the student's feature modules (AB, FSP); FT's
      trains only its paraphraser and runs the student without gradients.
    """

    name: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, float | int]] = {"ce_weight": 1.0, "loss_weight": 1.0}
    preact: ClassVar[bool] = False
    distills: ClassVar[bool] = True
    pretrains: ClassVar[bool] = False
    pretrains_student: ClassVar[bool] = True

    def __init__(self, pair: Pair, **hparams: Any):
        super().__init__()
        self.pair = pair
        self.hparams: dict[str, float | int] = type(self).settle(hparams, pair.n_data)

    @classmethod
    def settle(cls, given: Mapping[str, Any], n_data: int) -> dict[str, float | int]:
        """The hyper-parameters a run uses: ``defaults`` updated with ``given`` (checked), then
        adjusted to a training set of ``n_data`` images where the method needs to (CRD)."""
        return resolve_hparams(cls, given)

    # -- the losses ------------------------------------------------------------------------------
    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        """The method's distillation-stage loss (a scalar, not yet weighted)."""
        raise NotImplementedError(f"{self.name} adds no loss in the distillation stage")

    def pretrain_loss(self, s: Outputs, t: Outputs) -> Tensor:
        """The pre-training stage's loss (a scalar); only for ``pretrains`` distillers."""
        raise NotImplementedError(f"{self.name} has no pre-training stage")

    def total_loss(self, s: Outputs, t: Outputs, y: Tensor) -> Tensor:
        """``ce_weight * CE(student logits, y) [+ loss_weight * forward(s, t)]``."""
        loss = self.hparams["ce_weight"] * F.cross_entropy(s.logits, y)
        if self.distills:
            loss = loss + self.hparams["loss_weight"] * self(s, t)
        return loss

    # -- the stages ------------------------------------------------------------------------------
    @classmethod
    def pretrain_lr(cls, student: str, lr: float) -> float:
        """Learning rate of the pre-training stage for ``student`` trained at ``lr`` (RepDistiller: ``lr``)."""
        return lr

    def start_distillation(self) -> None:
        """Freeze what the distillation stage keeps fixed; called once, after pre-training."""

    # -- shared feature helpers ------------------------------------------------------------------
    def stage_shapes(self) -> tuple[tuple[Shape, ...], tuple[Shape, ...]]:
        """The stages' feature shapes ``(student, teacher)``, checked to be as many on both sides."""
        s, t = self.pair.s_shapes[1:-1], self.pair.t_shapes[1:-1]
        if len(s) != len(t):
            raise self.pair.incompatible(self.name, f"it matches stages one to one, and the student has {len(s)} "
                                                    f"stages, the teacher {len(t)}")
        return s, t

    def stage_maps(self) -> tuple[tuple[Shape, ...], tuple[Shape, ...]]:
        """:meth:`stage_shapes`, each also checked to be a ``(C, H, W)`` map on both sides."""
        s, t = self.stage_shapes()
        require_maps(self.pair, self.name, s, "student")
        require_maps(self.pair, self.name, t, "teacher")
        return s, t


def resolve_hparams(cls: type[Distiller], given: Mapping[str, Any]) -> dict[str, float | int]:
    """``cls.defaults`` updated with ``given``; ValueError names an unknown or mistyped value."""
    unknown = sorted(set(given) - set(cls.defaults))
    if unknown:
        raise ValueError(f"{cls.name}: unknown hyper-parameter {unknown[0]!r}; accepted: {', '.join(cls.defaults)}")
    out = dict(cls.defaults)
    for key, value in given.items():
        want = type(cls.defaults[key])
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (want is int and not isinstance(value, int)):
            raise ValueError(f"{cls.name}: hyper-parameter {key}={value!r} must be {want.__name__}")
        out[key] = want(value)
    return out


def match_spatial(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two maps to the other's height and width (RepDistiller's rule)."""
    ha, hb = a.shape[2:], b.shape[2:]
    if tuple(ha) == tuple(hb):
        return a, b
    size = (min(ha[0], hb[0]), min(ha[1], hb[1]))
    return (F.adaptive_avg_pool2d(a, size) if tuple(ha) != size else a,
            F.adaptive_avg_pool2d(b, size) if tuple(hb) != size else b)


def require_maps(pair: Pair, method: str, shapes: Sequence[Shape], side: str) -> None:
    """Raise unless every shape is a feature map ``(C, H, W)``."""
    bad = [s for s in shapes if len(s) != 3]
    if bad:
        raise pair.incompatible(method, f"the {side}'s feature of shape {bad[0]} is not a (C, H, W) map")

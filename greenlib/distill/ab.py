"""AB: Heo et al. 2019, "Knowledge transfer via distillation of activation boundaries formed by hidden neurons".

On the stages' pre-activations: a connector (identity where channels and size agree, else a
conv -> BN regressor) maps each student map onto the teacher's, and a margin loss pushes each
connected student neuron to the same side of zero as the teacher's (``(s + m)^2`` where ``s > -m``
and the teacher is off, ``(s - m)^2`` where ``s <= m`` and it is on). Stage ``i`` of ``n`` is
weighted ``2^(i - n + 1)``; the sum is divided by the batch size and scaled by 3/1000.

As in RepDistiller, AB acts through a pre-training stage only: the connectors and the student's
feature modules are trained on this loss (30 epochs there), then the student trains on the
cross-entropy alone (its ``train_student.py`` sets ``loss_kd = 0`` for AB) with the teacher still
run every step.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Distiller, Outputs, Pair
from .modules import ConvRegressor


def boundary_loss(s: Tensor, t: Tensor, margin: float) -> Tensor:
    """Sum over all neurons of the alternative L2 margin loss (AB's Eq. 6)."""
    off = (s > -margin) & (t <= 0)
    on = (s <= margin) & (t > 0)
    return ((s + margin).pow(2) * off + (s - margin).pow(2) * on).sum()


class AB(Distiller):
    name = "AB"
    reference = "Heo et al. 2019, Knowledge transfer via distillation of activation boundaries"
    defaults = {"ce_weight": 1.0, "loss_weight": 1.0, "margin": 1.0}
    preact = True
    distills = False
    pretrains = True

    def __init__(self, pair: Pair, **hparams):
        super().__init__(pair, **hparams)
        s, t = self.stage_maps()
        self.connectors = nn.ModuleList(
            nn.Identity() if a == b else ConvRegressor(a, b, relu=False, pair=pair, method=self.name)
            for a, b in zip(s, t))
        n = len(s)
        self.stage_weights = [2.0 ** (i - n + 1) for i in range(n)]

    def pretrain_loss(self, s: Outputs, t: Outputs) -> Tensor:
        bsz = s.logits.shape[0]
        margin = self.hparams["margin"]
        losses = [w * boundary_loss(c(f_s), f_t, margin)
                  for w, c, f_s, f_t in zip(self.stage_weights, self.connectors, s.feats[1:-1], t.feats[1:-1])]
        return torch.stack(losses).sum() / bsz * 3 / 1000

    def start_distillation(self) -> None:
        self.connectors.requires_grad_(False)  # unused after pre-training (RepDistiller: not trainable)

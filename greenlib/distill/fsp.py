"""FSP: Yim et al. 2017, "A gift from knowledge distillation: fast optimization, network minimization
and transfer learning".

The "flow of solution procedure" between consecutive feature maps of one network (stem and stages)
is their channel-by-channel Gram matrix, ``G[i, j] = mean over positions of top[i] * bottom[j]``
(the larger map average-pooled to the smaller); the student's FSP matrices are matched to the
teacher's by mean squared error, summed. Needs the same channels at every position on both sides.

As in RepDistiller, FSP acts through a pre-training stage only: the student's feature modules are
trained on this loss (30 epochs there), then the student trains on the cross-entropy alone
(``loss_kd = 0``) with the teacher still run every step.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Distiller, Outputs, Pair, match_spatial, require_maps


def fsp_matrices(feats: list[Tensor]) -> list[Tensor]:
    """``(N, C_top, C_bottom)`` Gram matrices of each consecutive pair of maps."""
    out = []
    for bottom, top in zip(feats[:-1], feats[1:]):
        bottom, top = match_spatial(bottom, top)
        out.append(torch.bmm(top.flatten(2), bottom.flatten(2).transpose(1, 2)) / bottom[0, 0].numel())
    return out


class FSP(Distiller):
    name = "FSP"
    reference = "Yim et al. 2017, A gift from knowledge distillation"
    defaults = {"ce_weight": 1.0, "loss_weight": 50.0}
    distills = False
    pretrains = True

    def __init__(self, pair: Pair, **hparams):
        super().__init__(pair, **hparams)
        s, t = pair.s_shapes[:-1], pair.t_shapes[:-1]
        require_maps(pair, self.name, s, "student")
        require_maps(pair, self.name, t, "teacher")
        s_c, t_c = [x[0] for x in s], [x[0] for x in t]
        if s_c != t_c:
            raise pair.incompatible(self.name, f"it needs equal channels at every feature map; the student has "
                                               f"{s_c}, the teacher {t_c}")

    def pretrain_loss(self, s: Outputs, t: Outputs) -> Tensor:
        pairs = zip(fsp_matrices(s.feats[:-1]), fsp_matrices(t.feats[:-1]))
        return sum((g_s - g_t).pow(2).mean() for g_s, g_t in pairs)

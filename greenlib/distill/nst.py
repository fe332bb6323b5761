"""NST: Huang and Wang 2017, "Like what you like: knowledge distill via neuron selectivity transfer".

Each channel's spatial map, L2-normalised, is a sample of the network's "neuron selectivity"; the
student's and teacher's distributions are matched by the squared maximum mean discrepancy with a
degree-2 polynomial kernel, ``k(a, b) = (a . b)^2``, per stage (the larger map average-pooled to
the smaller), summed. Channels may differ. RepDistiller: weight 50.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Distiller, Outputs, Pair, match_spatial


def poly_kernel_mean(a: Tensor, b: Tensor) -> Tensor:
    """Mean of ``(a_i . b_j)^2`` over the batch and every channel pair; ``a``, ``b``: ``(N, C, HW)``."""
    return torch.bmm(b, a.transpose(1, 2)).pow(2).mean()


def mmd2(f_s: Tensor, f_t: Tensor) -> Tensor:
    f_s, f_t = match_spatial(f_s, f_t)
    f_s = F.normalize(f_s.flatten(2), dim=2)
    f_t = F.normalize(f_t.flatten(2), dim=2)
    return poly_kernel_mean(f_t, f_t).detach() + poly_kernel_mean(f_s, f_s) - 2 * poly_kernel_mean(f_s, f_t)


class NST(Distiller):
    name = "NST"
    reference = "Huang & Wang 2017, Like what you like: knowledge distill via neuron selectivity transfer"
    defaults = {"ce_weight": 1.0, "loss_weight": 50.0}

    def __init__(self, pair: Pair, **hparams):
        super().__init__(pair, **hparams)
        self.stage_maps()  # raises for a pair whose stages are not feature maps

    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        return sum(mmd2(f_s, f_t) for f_s, f_t in zip(s.feats[1:-1], t.feats[1:-1]))

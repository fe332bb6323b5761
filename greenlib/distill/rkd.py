"""RKD: Park et al. 2019, "Relational knowledge distillation".

On the pooled vectors: the batch's pairwise distances (each divided by their mean) and the angles
of every triplet are matched with the smooth L1 loss, weighted 25 (distance) and 50 (angle).
RepDistiller: overall weight 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Distiller, Outputs


def pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """``(N, N)`` Euclidean distances, zero on the diagonal."""
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def normalised_distances(e: Tensor) -> Tensor:
    """Distances divided by the mean of the positive ones. Sum over count, not ``d[d > 0].mean()``:
    a boolean mask has a data-dependent size (a host sync), which a CUDA graph cannot capture."""
    d = pairwise_distances(e)
    return d / (d.sum() / (d > 0).sum())


def angles(e: Tensor) -> Tensor:
    """Cosines of the angle at each sample ``j`` between ``i - j`` and ``k - j``, flattened."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


class RKD(Distiller):
    name = "RKD"
    reference = "Park et al. 2019, Relational knowledge distillation"
    defaults = {"ce_weight": 1.0, "loss_weight": 1.0, "rkd_w_dist": 25.0, "rkd_w_angle": 50.0}

    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        f_s, f_t = s.feats[-1].flatten(1), t.feats[-1].flatten(1)
        with torch.no_grad():
            t_d, t_a = normalised_distances(f_t), angles(f_t)
        loss_d = F.smooth_l1_loss(normalised_distances(f_s), t_d)
        loss_a = F.smooth_l1_loss(angles(f_s), t_a)
        return self.hparams["rkd_w_dist"] * loss_d + self.hparams["rkd_w_angle"] * loss_a

"""SP: Tung and Mori 2019, "Similarity-preserving knowledge distillation".

The batch's pairwise similarities of the last stage's map, ``G = f f^T`` with rows L2-normalised,
are matched: ``||G_t - G_s||_F^2 / N^2``. Any pair of shapes works. RepDistiller: weight 3000.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import Distiller, Outputs


def similarity(f: Tensor) -> Tensor:
    """``(N, N)``: the batch's Gram matrix of flattened features, each row L2-normalised."""
    f = f.flatten(1)
    return F.normalize(f @ f.t(), dim=1)


class SP(Distiller):
    name = "SP"
    reference = "Tung & Mori 2019, Similarity-preserving knowledge distillation"
    defaults = {"ce_weight": 1.0, "loss_weight": 3000.0}

    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        n = s.feats[-2].shape[0]
        return (similarity(t.feats[-2]) - similarity(s.feats[-2])).pow(2).sum() / (n * n)

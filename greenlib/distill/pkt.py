"""PKT: Passalis and Tefas 2018, "Learning deep representations with probabilistic knowledge transfer".

On the pooled vectors: cosine similarities within the batch, mapped to [0, 1] and normalised per
row into conditional probabilities; the loss is the mean of ``p_t * log(p_t / p_s)``.
RepDistiller: weight 30000.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Distiller, Outputs

EPS = 1e-7


def similarity_distribution(f: Tensor) -> Tensor:
    """``(N, N)``: row-normalised ``(cos + 1) / 2`` between the batch's vectors."""
    f = f.flatten(1)
    f = f / (f.norm(dim=1, keepdim=True) + EPS)
    sim = (f @ f.t() + 1.0) / 2.0
    return sim / sim.sum(1, keepdim=True)


class PKT(Distiller):
    name = "PKT"
    reference = "Passalis & Tefas 2018, Learning deep representations with probabilistic knowledge transfer"
    defaults = {"ce_weight": 1.0, "loss_weight": 30000.0}

    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        p_s = similarity_distribution(s.feats[-1])
        p_t = similarity_distribution(t.feats[-1])
        return torch.mean(p_t * torch.log((p_t + EPS) / (p_s + EPS)))

"""AT: Zagoruyko and Komodakis 2017, "Paying more attention to attention".

Each stage's attention map, ``normalize(mean over channels of f^p)`` flattened, is matched by
squared error (mean over the map), summed over the stages; the larger map is average-pooled to
the smaller. RepDistiller: p = 2, weight 1000.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import Distiller, Outputs, Pair, match_spatial


def attention_map(f: Tensor, p: float) -> Tensor:
    """``(N, H*W)``: the channel mean of ``f ** p``, L2-normalised per sample."""
    return F.normalize(f.pow(p).mean(1).flatten(1), dim=1)


class AT(Distiller):
    name = "AT"
    reference = "Zagoruyko & Komodakis 2017, Paying more attention to attention"
    defaults = {"ce_weight": 1.0, "loss_weight": 1000.0, "attention_p": 2.0}

    def __init__(self, pair: Pair, **hparams):
        super().__init__(pair, **hparams)
        self.stage_maps()  # raises for a pair whose stages are not feature maps

    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        p = self.hparams["attention_p"]
        losses = []
        for f_s, f_t in zip(s.feats[1:-1], t.feats[1:-1]):
            f_s, f_t = match_spatial(f_s, f_t)
            losses.append((attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean())
        return sum(losses)

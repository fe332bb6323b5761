"""VID: Ahn et al. 2019, "Variational information distillation for knowledge transfer".

For each stage, a head of three 1x1 convs (student channels -> teacher channels -> teacher
channels, ReLU between) predicts the mean of a Gaussian over the teacher's map, with one learned
variance per teacher channel (``softplus(log_scale) + eps``, starting at ``init_pred_var``); the
loss is the Gaussian's negative log-likelihood of the teacher's map (up to a constant), averaged,
summed over the stages. The larger map is average-pooled to the smaller. RepDistiller: weight 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Distiller, Outputs, Pair, match_spatial


class VariationalHead(nn.Module):
    """Predicts a Gaussian (mean map, per-channel variance) over a teacher map from a student map."""

    def __init__(self, s_channels: int, t_channels: int, init_pred_var: float, eps: float):
        super().__init__()
        mid = t_channels
        self.mean = nn.Sequential(
            nn.Conv2d(s_channels, mid, 1, bias=False), nn.ReLU(),
            nn.Conv2d(mid, mid, 1, bias=False), nn.ReLU(),
            nn.Conv2d(mid, t_channels, 1, bias=False),
        )
        # softplus(log_scale) + eps == init_pred_var at the start
        self.log_scale = nn.Parameter(torch.full((t_channels,), math.log(math.expm1(init_pred_var - eps))))
        self.eps = eps

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s, f_t = match_spatial(f_s, f_t)
        mean = self.mean(f_s)
        var = (F.softplus(self.log_scale) + self.eps).view(1, -1, 1, 1)
        return torch.mean(0.5 * ((mean - f_t).pow(2) / var + var.log()))


class VID(Distiller):
    name = "VID"
    reference = "Ahn et al. 2019, Variational information distillation for knowledge transfer"
    defaults = {"ce_weight": 1.0, "loss_weight": 1.0, "init_pred_var": 5.0}

    def __init__(self, pair: Pair, **hparams):
        super().__init__(pair, **hparams)
        s, t = self.stage_maps()
        self.heads = nn.ModuleList(VariationalHead(a[0], b[0], self.hparams["init_pred_var"], eps=1e-5)
                                   for a, b in zip(s, t))

    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        return sum(head(f_s, f_t) for head, f_s, f_t in zip(self.heads, s.feats[1:-1], t.feats[1:-1]))

"""FitNet: Romero et al. 2015, "FitNets: hints for thin deep nets".

A regressor (conv -> BN -> ReLU) maps the student's hint-layer feature onto the teacher's, and the
mean squared error between them is the loss. As in RepDistiller the hint is ``feats[2]`` (the
second stage's output) and the regressor is trained jointly with the student, in one stage: its
``train_student.py`` has no separate hint-training stage for FitNet.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import Distiller, Outputs, Pair, require_maps
from .modules import ConvRegressor


class FitNet(Distiller):
    name = "FitNet"
    reference = "Romero et al. 2015, FitNets: hints for thin deep nets"
    defaults = {"ce_weight": 1.0, "loss_weight": 100.0, "hint_layer": 2}

    def __init__(self, pair: Pair, **hparams):
        super().__init__(pair, **hparams)
        h = self.hparams["hint_layer"]
        n = min(len(pair.s_shapes), len(pair.t_shapes)) - 1  # the pooled vector is no hint
        if not 0 <= h < n:
            raise pair.incompatible(self.name, f"hint_layer={h} is not a feature map of both (0..{n - 1})")
        require_maps(pair, self.name, [pair.s_shapes[h]], "student")
        require_maps(pair, self.name, [pair.t_shapes[h]], "teacher")
        self.regressor = ConvRegressor(pair.s_shapes[h], pair.t_shapes[h], relu=True, pair=pair, method=self.name)

    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        h = self.hparams["hint_layer"]
        return F.mse_loss(self.regressor(s.feats[h]), t.feats[h])

"""CC: Peng et al. 2019, "Correlation congruence for knowledge distillation".

As RepDistiller implements it: two linear heads embed the student's and the teacher's pooled
vectors into ``feat_dim`` dimensions (both trained with the student); with ``d = |e_s - e_t|`` the
loss is the batch mean of ``sum_k d[i, k] * d[i + 1, k]`` over consecutive samples. Weight 0.02.
"""
from __future__ import annotations

from torch import Tensor

from .base import Distiller, Outputs, Pair
from .modules import Embed


class CC(Distiller):
    name = "CC"
    reference = "Peng et al. 2019, Correlation congruence for knowledge distillation"
    defaults = {"ce_weight": 1.0, "loss_weight": 0.02, "feat_dim": 128}

    def __init__(self, pair: Pair, **hparams):
        super().__init__(pair, **hparams)
        dim = self.hparams["feat_dim"]
        self.embed_s = Embed(pair.s_shapes[-1][0], dim, normalize=False)
        self.embed_t = Embed(pair.t_shapes[-1][0], dim, normalize=False)

    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        d = (self.embed_s(s.feats[-1]) - self.embed_t(t.feats[-1])).abs()
        return (d[:-1] * d[1:]).sum(1).mean()

"""KD: Hinton, Vinyals and Dean 2015, "Distilling the knowledge in a neural network".

The student's softened class distribution matches the teacher's: KL(p_t^T || p_s^T) * T^2,
averaged over the batch, with ``p^T = softmax(logits / T)``. RepDistiller runs it with T = 4,
weight 0.9, and the cross-entropy at weight 0.1.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import Distiller, Outputs


def kd_divergence(s_logits: Tensor, t_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(t / T) || softmax(s / T))``, summed over classes, averaged over the batch."""
    log_p_s = F.log_softmax(s_logits / temperature, dim=1)
    p_t = F.softmax(t_logits / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * temperature**2


class KD(Distiller):
    name = "KD"
    reference = "Hinton et al. 2015, Distilling the knowledge in a neural network"
    defaults = {"ce_weight": 0.1, "loss_weight": 0.9, "temperature": 4.0}

    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        return kd_divergence(s.logits, t.logits, self.hparams["temperature"])

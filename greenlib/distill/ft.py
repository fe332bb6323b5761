"""FT: Kim et al. 2018, "Paraphrasing complex network: network compression via factor transfer".

A paraphraser (a convolutional auto-encoder on the teacher's last stage map, ``factor_rate`` times
its channels in the middle, LeakyReLU 0.1, no BN) is first trained to reconstruct that map (mean
squared error): the pre-training stage, which runs the student without training it. Then a
translator (three conv -> BN -> LeakyReLU layers on the student's last stage map) is trained with
the student so that its output's attention-like "factor", ``normalize(mean over channels of x^2)``,
matches that of the frozen paraphraser's code for the teacher, by mean absolute error.
RepDistiller: weight 200; pre-training lr 0.01 for CIFAR ResNet and WRN students.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Distiller, Outputs, Pair, match_spatial, require_maps

# Students whose paraphraser RepDistiller pre-trains at lr 0.01 (its helper/pretrain.py list)
LOW_PRETRAIN_LR_STUDENTS: tuple[str, ...] = (
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4", "resnet32x4",
    "wrn-16-1", "wrn-16-2", "wrn-40-1", "wrn-40-2",
)
LOW_PRETRAIN_LR = 0.01


def _conv_stack(channels: list[int], transposed: bool, bn: bool) -> nn.Sequential:
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [conv(c_in, c_out, 3, 1, 1), *([nn.BatchNorm2d(c_out)] if bn else []), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Auto-encoder of a teacher map: ``encoder`` gives the factor, ``decoder`` the reconstruction."""

    def __init__(self, channels: int, rate: float):
        super().__init__()
        mid = int(channels * rate)
        self.encoder = _conv_stack([channels, channels, mid, mid], transposed=False, bn=False)
        self.decoder = _conv_stack([mid, mid, channels, channels], transposed=True, bn=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def factor(x: Tensor, p: float) -> Tensor:
    """``(N, H*W)``: the channel mean of ``x ** p``, L2-normalised per sample."""
    return F.normalize(x.pow(p).mean(1).flatten(1), dim=1)


class FT(Distiller):
    name = "FT"
    reference = "Kim et al. 2018, Paraphrasing complex network: network compression via factor transfer"
    defaults = {"ce_weight": 1.0, "loss_weight": 200.0, "factor_rate": 0.5, "factor_p1": 2.0, "factor_p2": 1.0}
    pretrains = True
    pretrains_student = False

    def __init__(self, pair: Pair, **hparams):
        super().__init__(pair, **hparams)
        s, t = pair.s_shapes[-2], pair.t_shapes[-2]
        require_maps(pair, self.name, [s], "student")
        require_maps(pair, self.name, [t], "teacher")
        rate = self.hparams["factor_rate"]
        self.paraphraser = Paraphraser(t[0], rate)
        self.translator = _conv_stack([s[0], s[0], int(t[0] * rate), int(t[0] * rate)], transposed=False, bn=True)

    def pretrain_loss(self, s: Outputs, t: Outputs) -> Tensor:
        f_t = t.feats[-2]
        return F.mse_loss(self.paraphraser(f_t), f_t)

    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        with torch.no_grad():
            factor_t = self.paraphraser.encoder(t.feats[-2])
        factor_s = self.translator(s.feats[-2])
        factor_s, factor_t = match_spatial(factor_s, factor_t)
        diff = factor(factor_s, self.hparams["factor_p1"]) - factor(factor_t, self.hparams["factor_p1"])
        return diff.abs().pow(self.hparams["factor_p2"]).mean()

    @classmethod
    def pretrain_lr(cls, student: str, lr: float) -> float:
        return LOW_PRETRAIN_LR if student in LOW_PRETRAIN_LR_STUDENTS else lr

    def start_distillation(self) -> None:
        self.paraphraser.requires_grad_(False)  # frozen after pre-training, as in RepDistiller

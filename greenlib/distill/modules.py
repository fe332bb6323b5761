"""Auxiliary modules more than one distiller uses: a convolutional regressor and an embedding head.

Modules only one method uses live in its file (FT's paraphraser and translator, VID's heads,
CRD's memory bank).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Pair, Shape


class ConvRegressor(nn.Module):
    """Maps a student feature map onto a teacher's: conv -> BN [-> ReLU] (RepDistiller's ``ConvReg``).

    The conv fits the spatial sizes: stride 2 (3x3) when the student's map is twice the teacher's,
    a 4x4 transposed conv when it is half, a ``(1 + Hs - Ht) x (1 + Ws - Wt)`` valid conv when it is
    at least as large. Other size ratios raise :class:`~greenlib.distill.base.IncompatiblePairError`.
    FitNet uses it with ReLU, AB without.
    """

    def __init__(self, s_shape: Shape, t_shape: Shape, relu: bool, pair: Pair, method: str):
        super().__init__()
        (s_c, s_h, s_w), (t_c, t_h, t_w) = s_shape, t_shape
        if s_h == 2 * t_h:
            self.conv: nn.Module = nn.Conv2d(s_c, t_c, 3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, 4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, (1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise pair.incompatible(method, f"no regressor maps a {s_h}x{s_w} student map onto a {t_h}x{t_w} "
                                            "teacher map (needs half, double, or a student map at least as large)")
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class Embed(nn.Module):
    """A linear map of a feature (flattened) to ``dim_out``, L2-normalised when ``normalize``
    (CRD's ``Embed``; CC's ``LinearEmbed`` without it)."""

    def __init__(self, dim_in: int, dim_out: int, normalize: bool):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x.flatten(1))
        return F.normalize(x, dim=1, eps=1e-12) if self.normalize else x

"""CRD: Tian, Krishnan and Isola 2020, "Contrastive representation distillation".

Two heads embed the student's and the teacher's pooled vectors into ``feat_dim`` dimensions
(linear, then L2 norm; both trained with the student). A memory bank keeps one embedding per
training image for each network, updated with momentum ``nce_m`` at the batch's images and
re-normalised. For each image, its own slot (the positive) and ``nce_k`` negatives drawn uniformly,
with replacement, from the images of the other classes (RepDistiller's "exact" mode) are scored
against each side's memory, ``exp(v . m / nce_t) / Z`` (``Z`` fixed on the first batch, as the
mean score times the number of images), and the NCE loss of both sides (student anchored on the
teacher's memory and the reverse) is summed. RepDistiller: weight 0.8, 16384 negatives, T = 0.07,
momentum 0.5, 128 dimensions.

``nce_k`` is capped at the training set's size minus one (on a subset of the data RepDistiller
would draw the same images again and again); the cap is recorded in the run's config.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Distiller, Outputs, Pair
from .modules import Embed

EPS = 1e-7


class ContrastMemory(nn.Module):
    """The memory bank: ``n_data`` unit embeddings per side, momentum-updated; the negatives' sampler."""

    def __init__(self, labels: Tensor, dim: int, k: int, temperature: float, momentum: float):
        super().__init__()
        n = labels.numel()
        self.k, self.temperature, self.momentum = k, temperature, momentum
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory_s", torch.rand(n, dim).mul_(2 * stdv).sub_(stdv))
        self.register_buffer("memory_t", torch.rand(n, dim).mul_(2 * stdv).sub_(stdv))
        self.register_buffer("z_s", torch.tensor(-1.0))  # normalisation constants; < 0 until the first batch
        self.register_buffer("z_t", torch.tensor(-1.0))
        # Images sorted by class: class c holds positions start[c] .. start[c] + count[c] - 1. Derived
        # from the labels, so not checkpointed.
        labels = labels.long().cpu()
        counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
        self.register_buffer("by_class", torch.argsort(labels, stable=True), persistent=False)
        self.register_buffer("labels", labels, persistent=False)
        self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("class_count", counts, persistent=False)

    @property
    def n_data(self) -> int:
        return self.memory_s.shape[0]

    def sample(self, index: Tensor) -> Tensor:
        """``(B, 1 + k)``: each image's own position, then ``k`` images of other classes."""
        y = self.labels[index]
        start, count = self.class_start[y, None], self.class_count[y, None]
        r = (torch.rand(len(index), self.k, device=index.device) * (self.n_data - count)).long()
        r = torch.minimum(r, self.n_data - count - 1)  # rand() < 1, but float rounding may reach the end
        r = r + count * (r >= start)  # skip the anchor's own class
        return torch.cat([index[:, None], self.by_class[r]], 1)

    def scores(self, v: Tensor, memory: Tensor, z: Tensor, idx: Tensor) -> Tensor:
        """``exp(v . memory[idx] / T) / Z``, ``(B, 1 + k)``; sets ``z`` on its first call."""
        w = memory[idx]  # a copy: the memory update below does not touch the graph
        out = torch.exp(torch.bmm(w, v[:, :, None]).squeeze(2) / self.temperature)
        z_now = torch.where(z < 0, out.detach().mean() * self.n_data, z)  # no host sync
        z.copy_(z_now)
        return out / z_now

    @torch.no_grad()
    def update(self, memory: Tensor, index: Tensor, v: Tensor) -> None:
        pos = memory[index] * self.momentum + v.detach() * (1 - self.momentum)
        memory.index_copy_(0, index, pos / pos.norm(dim=1, keepdim=True))

    def nce_loss(self, x: Tensor) -> Tensor:
        """NCE with the positive in column 0 and a uniform noise distribution over the images."""
        m = x.shape[1] - 1
        noise = m / self.n_data
        log_d1 = torch.log(x[:, 0] / (x[:, 0] + noise + EPS))
        log_d0 = torch.log(noise / (x[:, 1:] + noise + EPS))
        return -(log_d1.sum() + log_d0.sum()) / x.shape[0]


class CRD(Distiller):
    name = "CRD"
    reference = "Tian et al. 2020, Contrastive representation distillation"
    defaults = {"ce_weight": 1.0, "loss_weight": 0.8, "feat_dim": 128, "nce_k": 16384, "nce_t": 0.07, "nce_m": 0.5}

    def __init__(self, pair: Pair, **hparams):
        super().__init__(pair, **hparams)
        if pair.train_labels.unique().numel() < 2:
            raise pair.incompatible(self.name, "it draws negatives from other classes, and the training labels "
                                               "hold one class")
        dim = self.hparams["feat_dim"]
        self.embed_s = Embed(pair.s_shapes[-1][0], dim, normalize=True)
        self.embed_t = Embed(pair.t_shapes[-1][0], dim, normalize=True)
        self.memory = ContrastMemory(pair.train_labels, dim, self.hparams["nce_k"], self.hparams["nce_t"],
                                     self.hparams["nce_m"])

    @classmethod
    def settle(cls, given, n_data: int) -> dict[str, float | int]:
        hp = super().settle(given, n_data)
        hp["nce_k"] = max(1, min(hp["nce_k"], n_data - 1))
        return hp

    def forward(self, s: Outputs, t: Outputs) -> Tensor:
        if s.index is None:
            raise ValueError("CRD needs the batch's training-set indices (Outputs.index); "
                             "feed the trainer through greenlib.distill.IndexedLoader")
        mem = self.memory
        v_s, v_t = self.embed_s(s.feats[-1]), self.embed_t(t.feats[-1])
        idx = mem.sample(s.index)
        out_s = mem.scores(v_s, mem.memory_t, mem.z_s, idx)  # student anchored on the teacher's memory
        out_t = mem.scores(v_t, mem.memory_s, mem.z_t, idx)
        mem.update(mem.memory_s, s.index, v_s)
        mem.update(mem.memory_t, s.index, v_t)
        return mem.nce_loss(out_s) + mem.nce_loss(out_t)

"""A training loader that also says which training images each batch holds (CRD's memory bank).

Both loader kinds of :mod:`greenlib.data` visit the images in :func:`greenlib.data.epoch_order`
of ``(seed, epoch)``, in batches of ``batch_size``, so the positions of a batch are known without
changing what the loader yields: the trainer still sees ``(x, y)``, and the loss reads
:attr:`IndexedLoader.index` for the batch it was just given.

The positions are written into one buffer that lives as long as the loader, and ``index`` is a
view of it: a training step captured in a CUDA graph reads the buffer's address, so each replay
sees the positions of the batch just yielded (a graph would otherwise replay the first batch's).
"""
from __future__ import annotations

from typing import Iterator

import torch

from ..data import epoch_order


class IndexedLoader:
    """Wraps a training loader (``GPULoader`` or ``TorchvisionLoader``); yields what it yields.

    ``index``: int64 positions (on the loader's device) of the batch last yielded, a view of a
    buffer the next batch overwrites; None before the first. ``set_epoch`` and ``len`` pass through.
    """

    def __init__(self, loader):
        if not getattr(loader, "train", False):
            raise ValueError("IndexedLoader wraps a training loader (shuffled by epoch_order), not a test loader")
        self.loader = loader
        self.index: torch.Tensor | None = None
        self._buffer: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ld = self.loader
        order = epoch_order(ld.n, ld.seed, ld.epoch)[:ld.num_samples].to(ld.device)
        if self._buffer is None or self._buffer.device != order.device:
            self._buffer = torch.zeros(ld.batch_size, dtype=torch.long, device=order.device)
        start = 0
        for x, y in ld:
            n = y.shape[0]
            self.index = self._buffer[:n]
            self.index.copy_(order[start:start + n])
            start += n
            yield x, y

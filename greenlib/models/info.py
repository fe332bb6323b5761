"""Size and cost of a model: parameters, FLOPs and activations per image, counted by torch itself."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .registry import build_model


def count_params(model: nn.Module) -> int:
    """Number of parameters (weights and biases, BN affine included; BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


class _WrittenElements(TorchDispatchMode):
    """Counts the elements of every operator's output (its first, for those returning several: a
    BatchNorm's saved statistics differ between devices; views write none)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        if not func.is_view and isinstance(first, torch.Tensor):
            self.total += first.numel()
        return out


def model_info(model_or_name: nn.Module | str, input_shape: tuple[int, int, int] = (3, 32, 32),
               num_classes: int = 100) -> dict[str, int]:
    """Parameters and per-image compute of a model (or of the zoo model named so).

    Returns ``{"params": int, "flops_per_image": int, "macs_per_image": int, "activations_per_image": int}``.

    FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward of a batch of
    one ``input_shape`` image in eval mode, without autograd. It counts matrix multiplies and
    convolutions only, each multiply-accumulate as 2 FLOPs (``macs = flops // 2``); bias adds,
    BatchNorm, activations, pooling, residual adds and other elementwise ops are not counted.
    ``activations_per_image`` counts what FLOPs leave out: the elements every operator of that
    forward writes (convolutions, BatchNorm, activations, pooling, adds; views write none), a measure
    of memory traffic. Small CIFAR networks train memory-bound, and their energy per image follows
    it far closer than FLOPs (``greenlib.cost``: training a deep, narrow ResNet56 took 6.5-7 times a
    VGG's energy per FLOP on the H200, 1.2-1.3 times its energy per activation).

    ``num_classes`` is used only when a name is given. A model passed in is run on the device and
    dtype of its first parameter and is returned to its training mode afterwards.
    Raises ValueError for an unknown model name.
    """
    if isinstance(model_or_name, str):
        # built on the meta device: shapes only, no weights initialised (counting is then ~10x faster)
        with torch.device("meta"):
            model = build_model(model_or_name, num_classes)
    else:
        model = model_or_name
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    x = torch.zeros(1, *input_shape, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter, _WrittenElements() as written:
            model(x)
    finally:
        model.train(was_training)
    flops = int(counter.get_total_flops())
    return {"params": count_params(model), "flops_per_image": flops, "macs_per_image": flops // 2,
            "activations_per_image": int(written.total)}

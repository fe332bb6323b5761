"""Size and cost of a model: parameters and FLOPs per image, counted by torch itself."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import build_model


def count_params(model: nn.Module) -> int:
    """Number of parameters (weights and biases, BN affine included; BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def model_info(model_or_name: nn.Module | str, input_shape: tuple[int, int, int] = (3, 32, 32),
               num_classes: int = 100) -> dict[str, int]:
    """Parameters and per-image compute of a model (or of the zoo model named so).

    Returns ``{"params": int, "flops_per_image": int, "macs_per_image": int}``.

    FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward of a batch of
    one ``input_shape`` image in eval mode, without autograd. It counts matrix multiplies and
    convolutions only, each multiply-accumulate as 2 FLOPs (``macs = flops // 2``); bias adds,
    BatchNorm, activations, pooling, residual adds and other elementwise ops are not counted.

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
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    flops = int(counter.get_total_flops())
    return {"params": count_params(model), "flops_per_image": flops, "macs_per_image": flops // 2}

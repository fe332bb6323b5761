"""What both backends share: precisions, the error type, calibration batches and the deployable.

A :class:`Deployable` is an ``nn.Module`` that takes normalised float images ``(N, 3, H, W)`` on
any device and returns float32 logits on its own device, so :func:`greenlib.train.evaluate` and
:func:`greenlib.inference.measure_inference` run it unchanged. It says how it runs (``backend``,
``precision``, ``device``, ``kernel_path``) so every stored result can say it too.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..inference import precision_stack

PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16", "int8")
"""``fp32`` is IEEE fp32 (TF32 off); ``tf32`` the same weights with TF32 tensor-core convolutions and
matmuls, its own precision (:func:`greenlib.inference.precision_stack`)."""
CALIBRATED: tuple[str, ...] = ("int8",)
"""Precisions whose conversion needs calibration data (the others are casts)."""
CALIBRATORS: tuple[str, ...] = ("histogram", "minmax")
"""histogram: clipping range chosen from an activation histogram (TensorRT's entropy calibrator,
torch's HistogramObserver); minmax: the observed range."""

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16,
                                   "bf16": torch.bfloat16}


class QuantizationError(ValueError):
    """A precision, backend, model or calibration set that cannot be quantized; names the value."""


def check_precision(precision: Any) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise QuantizationError naming it."""
    if precision not in PRECISIONS:
        raise QuantizationError(f"unsupported precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    return precision


def check_calibrator(calibrator: Any) -> str:
    if calibrator not in CALIBRATORS:
        raise QuantizationError(f"unknown calibrator {calibrator!r}; accepted: {', '.join(CALIBRATORS)}")
    return calibrator


def check_calibration(batches: Sequence[Tensor] | None, precision: str) -> list[Tensor]:
    """The calibration batches as a list; raises QuantizationError if ``precision`` needs them and
    there are none, or if one is not a float ``(N, C, H, W)`` tensor with N >= 1."""
    batches = list(batches) if batches is not None else []
    if precision in CALIBRATED and not batches:
        raise QuantizationError(f"the calibration set is empty: {precision} needs at least one batch of "
                                "training images (calib_images >= 1)")
    for i, x in enumerate(batches):
        if not (isinstance(x, Tensor) and x.dim() == 4 and x.is_floating_point() and x.shape[0] >= 1):
            what = f"{type(x).__name__} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise QuantizationError(f"calibration batch {i} is {what}; expected a float (N, C, H, W) tensor")
    return batches


def calibration_batches(train_x: Tensor, mean: Sequence[float], std: Sequence[float], n_images: int,
                        batch_size: int, device: torch.device | str) -> list[Tensor]:
    """The first ``n_images`` training images as normalised float32 batches on ``device``.

    ``train_x``: uint8 ``(N, 3, H, W)``; no augmentation (what deployment sees). Batches all have
    ``min(batch_size, n_images)`` images: TensorRT calibrates at one fixed shape, so a final partial
    batch is left out (``len(result) * result[0].shape[0]`` images are used). Raises
    QuantizationError for ``n_images < 1`` (an empty calibration set) or more than ``train_x`` has.
    """
    if not isinstance(n_images, int) or n_images < 1:
        raise QuantizationError(f"the calibration set is empty: n_images={n_images!r}; give at least 1 image")
    if n_images > len(train_x):
        raise QuantizationError(f"n_images={n_images} calibration images asked for, but the training split "
                                f"holds {len(train_x)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise QuantizationError(f"calibration batch_size={batch_size!r}; accepted: an int >= 1")
    bs = min(batch_size, n_images)
    x = train_x[: (n_images // bs) * bs].to(device)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return [((xb.float() / 255) - m) / s for xb in x.split(bs)]


class Deployable(nn.Module):
    """A model ready for inference at one precision on one device.

    ``forward(x)`` moves ``x`` to ``device`` and ``input_dtype`` (a no-op when it is there already:
    pre-convert images to keep the copy out of a measured window) and returns float32 logits, under
    :func:`~greenlib.inference.precision_stack` of its precision (fp32: TF32 off; tf32: on), so its
    accuracy, kernels and IEC come from one stack wherever it is called.
    """

    def __init__(self, module: nn.Module, *, backend: str, precision: str, device: torch.device | str,
                 input_dtype: torch.dtype, kernel_path: str, calibration_images: int = 0,
                 details: dict[str, Any] | None = None):
        super().__init__()
        self.module = module
        self.backend = backend
        self.precision = check_precision(precision)
        self.device = torch.device(device)
        self.input_dtype = input_dtype
        self.kernel_path = kernel_path
        self.calibration_images = int(calibration_images)
        self.details = dict(details or {})  # backend-specific facts worth storing (engine, observers)

    def forward(self, x: Tensor) -> Tensor:
        with precision_stack(self.precision):
            return self.module(x.to(self.device, self.input_dtype, non_blocking=True)).float()

    def describe(self) -> dict[str, Any]:
        """Plain-JSON facts about this deployable (stored with a run)."""
        return {"backend": self.backend, "precision": self.precision, "device": str(self.device),
                "input_dtype": str(self.input_dtype).removeprefix("torch."), "kernel_path": self.kernel_path,
                "calibration_images": self.calibration_images, **self.details}

    def extra_repr(self) -> str:
        return f"backend={self.backend}, precision={self.precision}, device={self.device}"

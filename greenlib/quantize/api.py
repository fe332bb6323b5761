"""One interface over the backends: pick one, quantize, infer, and prove what ran.

    backend, why = select_backend("auto", device)        # tensorrt where it works, else pytorch
    dep = quantize(model, "int8", calib_batches, backend=backend, device=device)
    logits = infer(dep, images)
    evidence = kernel_evidence(dep, images)             # profiler op/kernel names, int8 ones listed

Backends live in :data:`BACKENDS` (name -> object with ``unavailable``, ``deploy_device``,
``skip_reason``, ``quantize``); adding one touches this table and its own module.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .base import Deployable, QuantizationError, check_calibration, check_calibrator, check_precision
from .torch_backend import PyTorchBackend
from .trt_backend import TensorRTBackend

BACKENDS: dict[str, Any] = {"tensorrt": TensorRTBackend(), "pytorch": PyTorchBackend()}
BACKEND_REQUESTS: tuple[str, ...] = ("auto", *BACKENDS)

INT8_KERNEL = re.compile(r"quantized::|int8|i8i8|imma", re.IGNORECASE)
"""Op or kernel names that do int8 arithmetic: torch's quantized CPU ops (``quantized::conv2d``),
TensorRT/cuDNN int8 kernels (``..._i8i8_...``, ``int8x4``, ``imma``)."""


def select_backend(requested: str = "auto", device: torch.device | str = "cpu") -> tuple[str, str]:
    """``(backend name, why)``: ``auto`` takes TensorRT where it works on ``device``, else PyTorch.

    A named backend is returned as asked (whether it can run is :func:`plan`'s skip reason).
    Raises QuantizationError for an unknown name.
    """
    if requested not in BACKEND_REQUESTS:
        raise QuantizationError(f"unknown backend {requested!r}; accepted: {', '.join(BACKEND_REQUESTS)}")
    if requested != "auto":
        return requested, "requested"
    problem = BACKENDS["tensorrt"].skip_reason("fp32", device)
    if problem is None:
        return "tensorrt", "auto: tensorrt is importable and a CUDA GPU is visible"
    return "pytorch", f"auto: {problem}"


def quantize(model: nn.Module, precision: str, calib_data: Sequence[Tensor] | None = None, *,
             backend: str = "auto", device: torch.device | str | None = None, calibrator: str = "histogram",
             batch_size: int = 128, name: str | None = None) -> Deployable:
    """``model`` (trained, fp32; not modified) as a :class:`Deployable` at ``precision``.

    ``calib_data``: normalised float image batches (see :func:`calibration_batches`); int8 needs at
    least one, the casts ignore them. ``device``: where the deployable should run (default: the
    model's); the PyTorch int8 path always deploys on the CPU. ``batch_size``: the largest batch
    inference will use (TensorRT builds for 1..batch_size). ``name`` appears in error messages.

    Raises QuantizationError for an unsupported precision, an unknown backend or calibrator, an
    empty calibration set for int8, or a model the backend cannot convert (named).
    """
    check_precision(precision)
    check_calibrator(calibrator)
    name = name or type(model).__name__
    calib = check_calibration(calib_data, precision)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    chosen, _ = select_backend(backend, device)
    problem = BACKENDS[chosen].unavailable()
    if problem:
        raise QuantizationError(f"backend {chosen!r} cannot run here: {problem}")
    return BACKENDS[chosen].quantize(model, precision, calib, device=device, calibrator=calibrator,
                                     batch_size=batch_size, name=name)


@torch.inference_mode()
def infer(deployable: Deployable, x: Tensor) -> Tensor:
    """float32 logits of ``deployable`` for normalised images ``x`` (any device; moved as needed)."""
    return deployable(x)


@dataclass(frozen=True)
class Variant:
    """One deployment a notebook measures: precision, backend, device, and why (or why not)."""

    precision: str
    backend: str
    device: torch.device
    why: str  # why this backend
    skip: str | None  # why this variant is not measured here, or None

    @property
    def label(self) -> str:
        return f"{self.precision} ({self.backend}, {self.device.type})"


def variant(precision: str, backend: str, device: torch.device | str) -> Variant:
    """Where ``precision`` deploys with ``backend`` (``auto`` resolved) from a run on ``device``."""
    check_precision(precision)
    name, why = select_backend(backend, device)
    impl = BACKENDS[name]
    return Variant(precision, name, impl.deploy_device(precision, device), why, impl.skip_reason(precision, device))


def plan(precisions: Sequence[str], backend: str, device: torch.device | str) -> list[Variant]:
    """The variants to measure for ``precisions``: one per precision on the chosen backend, and,
    when ``auto`` chose TensorRT, also PyTorch's CPU int8 (every INT8 path that is real here)."""
    out = [variant(p, backend, device) for p in precisions]
    if backend == "auto" and "int8" in precisions and out[0].backend == "tensorrt":
        cpu = variant("int8", "pytorch", device)
        out.append(Variant(cpu.precision, cpu.backend, cpu.device, "auto: PyTorch's CPU int8 is measured besides "
                           "TensorRT's (every INT8 path that is real here)", cpu.skip))
    return out


def kernel_evidence(deployable: Deployable, x: Tensor, top: int = 15) -> dict[str, Any]:
    """What really runs: one profiled forward of ``x``; op and CUDA-kernel names with call counts.

    Returns ``{"device", "ops": {name: count} (top by count), "int8_ops": [names matching
    INT8_KERNEL], "profiled_batch"}``. For an int8 deployable an empty ``int8_ops`` means nothing
    ran in int8 (fake quantization would look like that).
    """
    from torch.profiler import ProfilerActivity, profile

    x = x.to(deployable.device, deployable.input_dtype)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.device.type == "cuda" else [])
    with torch.inference_mode():
        deployable(x)  # warm: lazy init and autotuning out of the profile
        with profile(activities=acts) as prof:
            deployable(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
    counts = Counter({e.key: e.count for e in prof.key_averages()})
    return {"device": str(x.device), "profiled_batch": int(x.shape[0]),
            "ops": dict(counts.most_common(top)),
            "int8_ops": sorted(k for k in counts if INT8_KERNEL.search(k))}


def require_int8(evidence: dict[str, Any], what: str) -> None:
    """Raise QuantizationError if ``evidence`` shows no int8 op: INT8 energy is never reported for
    a model that does not execute int8 kernels."""
    if not evidence["int8_ops"]:
        raise QuantizationError(f"{what}: the profiler saw no int8 op or kernel on {evidence['device']} "
                                f"(ops: {', '.join(evidence['ops'])}); refusing to report it as INT8")

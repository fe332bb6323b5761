"""IEC: the energy of one inference, measured over a traced window of many batched inferences.

A single inference lasts microseconds and GPU power sensors update every 0.1-1 s, so IEC is the
traced energy of ``N`` inferences divided by ``N``, after a warm-up that is not counted, over a
window of at least ``min_seconds``. Batch size matters (see docs/measurement.md): the paper's IEC
of ~9e-7 W·h (3.2 mJ) per VGG16 image implies batched inference, not batch 1.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from .train import on_device

STACK_PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16", "int8")
"""Precisions an IEC can be measured at. ``fp32`` is true IEEE fp32 (TF32 off); ``tf32`` is fp32
weights and activations with TF32 tensor-core convolutions and matmuls, a precision of its own."""


def _tf32_state() -> tuple[bool, bool]:
    # the legacy flags, as one pair: torch >= 2.9's per-backend fp32_precision API must not be mixed
    # with them (torch raises when they disagree), and nothing in greenlib uses it
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def _set_tf32(conv: bool, matmul: bool) -> None:
    torch.backends.cudnn.allow_tf32 = conv
    torch.backends.cuda.matmul.allow_tf32 = matmul


def tf32_enabled() -> bool:
    """Whether fp32 convolutions or matmuls may run as TF32 now (torch's default: convolutions do)."""
    return any(_tf32_state())


@contextmanager
def precision_stack(precision: str) -> Iterator[bool]:
    """The one inference stack policy of every IEC: TF32 off (cuDNN convolutions and cuBLAS matmuls
    in IEEE fp32) unless ``precision`` is ``"tf32"``, where both are on. Yields whether TF32 is on;
    the previous flags are restored on exit, also after an error. Raises ValueError for a precision
    not in :data:`STACK_PRECISIONS`.

    On Ampere and Hopper GPUs torch runs fp32 convolutions as TF32 by default, so without this an
    "fp32" IEC would be a TF32 IEC and not comparable with another stack's fp32.
    """
    if precision not in STACK_PRECISIONS:
        raise ValueError(f"precision={precision!r}; accepted: {', '.join(STACK_PRECISIONS)}")
    before = _tf32_state()
    on = precision == "tf32"
    _set_tf32(on, on)
    try:
        yield on
    finally:
        _set_tf32(*before)


def stack_name(backend: str, precision: str, batch_size: int, tf32: bool, graph: bool = False) -> str:
    """How an IEC was measured, for tables: ``PyTorch fp32, batch 128, TF32 off`` (``, CUDA graph``
    appended for a graphed forward)."""
    pretty = {"pytorch": "PyTorch", "tensorrt": "TensorRT"}.get(backend, backend)
    return f"{pretty} {precision}, batch {batch_size}, TF32 {'on' if tf32 else 'off'}" + (", CUDA graph" if graph else "")


@torch.inference_mode()
def measure_inference(model: nn.Module, images: torch.Tensor, tracer, *, batch_size: int, min_seconds: float,
                      warmup_s: float = 1.0, stage: str = "inference", dtype: torch.dtype | None = None,
                      max_batches: int | None = None, precision: str = "fp32",
                      backend: str = "pytorch", graph: bool = False) -> dict[str, Any]:
    """Trace batched inference of ``model`` on ``images`` (a normalised float tensor on the device).

    Batches cycle over ``images``; the window runs until ``min_seconds`` have passed (checked with
    a device sync every few batches) or ``max_batches`` ran. Warm-up and window run under
    :func:`precision_stack` (``precision``: fp32 means TF32 off). Returns the stage's tracer summary
    plus ``images``, ``batches``, ``iec_j``, ``iec_wh`` (per image), ``latency_ms`` (per batch),
    ``throughput_ips`` (images per second) and the stack: ``backend``, ``precision``, ``tf32``,
    ``stack`` (:func:`stack_name`), ``graph``.

    ``graph=True`` (CUDA only) captures one forward as a CUDA graph after the warm-up and replays it
    for every batch, copied into its static input: one launch a batch instead of one a kernel. At
    batch 128, PyTorch's eager fp16/bf16 forward of a CIFAR VGG keeps an H200 only 39-60% busy (the
    launches from Python bound it), so its IEC depends on the host's CPU (docs/quantization.md); a
    graphed one measures the GPU, as a TensorRT engine does. Off by default: every stored IEC is eager.
    """
    with precision_stack(precision) as tf32:
        out = _measure(model, images, tracer, batch_size=batch_size, min_seconds=min_seconds, warmup_s=warmup_s,
                       stage=stage, dtype=dtype, max_batches=max_batches, graph=graph)
    return out | {"backend": backend, "precision": precision, "tf32": tf32, "graph": graph,
                  "stack": stack_name(backend, precision, batch_size, tf32, graph)}


def graphed_forward(model: nn.Module, example: torch.Tensor):
    """``model``'s forward on batches shaped like ``example`` as a replayed CUDA graph: a callable
    that copies its batch into the graph's static input, replays, and returns the graph's (static)
    output. Three forwards on a side stream first, as torch requires before a capture."""
    with on_device(example.device):  # the capture stream is the current device's (train.on_device)
        static = example.clone()
        side = torch.cuda.Stream(example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                model(static)
        torch.cuda.current_stream(example.device).wait_stream(side)
        g = torch.cuda.CUDAGraph()
        # a capture stream of the example's device: torch's default one is made once per process, on
        # the device current at the first capture, and a capture elsewhere on it fails (session 16)
        with torch.cuda.graph(g, stream=torch.cuda.Stream(example.device), capture_error_mode="thread_local"):
            out = model(static)

    def forward(x: torch.Tensor) -> torch.Tensor:
        static.copy_(x)
        g.replay()  # on the capture's device: replay guards it
        return out

    return forward


def _measure(model: nn.Module, images: torch.Tensor, tracer, *, batch_size: int, min_seconds: float,
             warmup_s: float, stage: str, dtype: torch.dtype | None, max_batches: int | None,
             graph: bool = False) -> dict[str, Any]:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: must be >= 1")
    if not min_seconds > 0:
        raise ValueError(f"min_seconds={min_seconds!r}: must be > 0")
    if images.shape[0] < batch_size:
        reps = -(-batch_size // images.shape[0])
        images = images.repeat(reps, 1, 1, 1)
    model.eval()
    device = images.device
    if graph and device.type != "cuda":
        raise ValueError(f"graph=True replays a CUDA graph; the images are on {device}")
    if dtype is not None:
        images = images.to(dtype)
    batches = [images[i:i + batch_size] for i in range(0, images.shape[0] - batch_size + 1, batch_size)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if graph:
        model = graphed_forward(model, batches[0])

    # warm-up: kernels chosen, caches and clocks settled; not counted
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < warmup_s or i < 2:
        model(batches[i % len(batches)])
        i += 1
        if i % 8 == 0:
            sync()
    sync()

    n_batches = 0
    check_every = 1 if device.type == "cpu" else 16
    with tracer.window(stage):
        t0 = time.perf_counter()
        while True:
            model(batches[n_batches % len(batches)])
            n_batches += 1
            if max_batches is not None and n_batches >= max_batches:
                break
            if n_batches % check_every == 0:
                sync()
                if time.perf_counter() - t0 >= min_seconds:
                    break
        sync()
    summary = tracer.windows[stage].to_dict()
    if not summary["energy_j"] > 0:  # an IEC of 0 would make G infinite
        raise RuntimeError(f"the traced {stage} window ({summary['elapsed_s']:.3f} s, source "
                           f"{summary.get('energy_source')!r}) recorded {summary['energy_j']!r} J: the source updates "
                           f"more slowly than the window; raise min_seconds (now {min_seconds!r})")
    n_images = n_batches * batch_size
    elapsed = summary["elapsed_s"]
    return {**summary, "images": n_images, "batches": n_batches, "batch_size": batch_size,
            "iec_j": summary["energy_j"] / n_images, "iec_wh": summary["energy_j"] / n_images / 3600.0,
            "latency_ms": 1e3 * elapsed / n_batches, "throughput_ips": n_images / elapsed}

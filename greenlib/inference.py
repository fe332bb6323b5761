"""IEC: the energy of one inference, measured over a traced window of many batched inferences.

A single inference lasts microseconds and GPU power sensors update every 0.1-1 s, so IEC is the
traced energy of ``N`` inferences divided by ``N``, after a warm-up that is not counted, over a
window of at least ``min_seconds``. Batch size matters (see docs/measurement.md): the paper's IEC
of ~9e-7 W·h (3.2 mJ) per VGG16 image implies batched inference, not batch 1.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn


@torch.inference_mode()
def measure_inference(model: nn.Module, images: torch.Tensor, tracer, *, batch_size: int, min_seconds: float,
                      warmup_s: float = 1.0, stage: str = "inference", dtype: torch.dtype | None = None,
                      max_batches: int | None = None) -> dict[str, Any]:
    """Trace batched inference of ``model`` on ``images`` (a normalised float tensor on the device).

    Batches cycle over ``images``; the window runs until ``min_seconds`` have passed (checked with
    a device sync every few batches) or ``max_batches`` ran. Returns the stage's tracer summary plus
    ``images``, ``batches``, ``iec_j``, ``iec_wh`` (per image), ``latency_ms`` (per batch) and
    ``throughput_ips`` (images per second).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: must be >= 1")
    if not min_seconds > 0:
        raise ValueError(f"min_seconds={min_seconds!r}: must be > 0")
    if images.shape[0] < batch_size:
        reps = -(-batch_size // images.shape[0])
        images = images.repeat(reps, 1, 1, 1)
    model.eval()
    device = images.device
    if dtype is not None:
        images = images.to(dtype)
    batches = [images[i:i + batch_size] for i in range(0, images.shape[0] - batch_size + 1, batch_size)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

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

"""Quantization runs: the shared base run, a traced ``calibration`` stage, accuracy and IEC.

TEC of post-training quantization (the paper's Table 2) = base training + calibration:

- ``tec_base_wh``: the ``base_training`` stage of the shared baseline run
  (:func:`greenlib.experiments.base_model`, the same run notebook 01 reports);
- ``tec_calibration_wh``: the traced ``calibration`` stage, i.e. everything between the trained
  fp32 model and the deployable: the calibration passes int8 needs and the conversion (a dtype
  cast, the quantized-module swap, or a TensorRT engine build). For fp32/fp16/bf16 casts it is
  close to 0 but still measured.

The base run's energy was measured where it trained (a GPU in ``quick``), calibration and
inference where the deployable runs (the CPU for PyTorch int8), so ``energy_measured_by`` lists
every source involved and ``estimated`` is set if any of them is an estimate.

Every deployable runs under one stack policy (:func:`greenlib.inference.precision_stack`): fp32 is
IEEE fp32 (TF32 off), tf32 its own precision. The config's ``tf32`` says which, so a run stored
before the policy (no ``tf32`` entry; its fp32 ran as TF32, torch's default) is another run.
"""
from __future__ import annotations

import warnings
from typing import Any

import pandas as pd
import torch

from .. import experiments
from ..config import Resolved
from ..data import make_loaders
from ..env import cpu_model, hardware_label
from ..inference import measure_inference
from ..io import atomic_write_json
from ..models import model_info
from ..report import load_runs
from ..tracer import Tracer
from ..train import evaluate, seed_everything
from .api import Variant, kernel_evidence, quantize, require_int8, variant
from .base import CALIBRATED, QuantizationError, calibration_batches

STAGE = "calibration"


def deploy_hardware(device: torch.device) -> str:
    """The GPU's name, or ``CPU (<model>)`` (as environment.json names a CPU-only machine): where a
    deployable's energy is measured."""
    return experiments.hardware_name(device) if device.type == "cuda" else hardware_label({"cpu": cpu_model()})


def quantization_config(cfg: Resolved) -> dict[str, Any]:
    """A quantization run's config without model, seed, precision, backend and hardware."""
    return {"kind": "quantization", "base_epochs": cfg.base_epochs, "batch_size": cfg.batch_size,
            **experiments.shared_config(cfg)}


def run_config(ctx: experiments.Context, model_name: str, seed: int, v: Variant) -> dict[str, Any]:
    calibrated = v.precision in CALIBRATED
    return {**quantization_config(ctx.cfg), "model": model_name, "seed": seed, "precision": v.precision,
            "backend": v.backend, "deploy_device": v.device.type, "deploy_hardware": deploy_hardware(v.device),
            "calib_images": ctx.cfg.calib_images if calibrated else 0,
            "calibrator": ctx.cfg.calibrator if calibrated else "none",
            "base_run_id": experiments.base_run_id(ctx, model_name, seed, ctx.cfg.base_epochs),
            "tf32": v.precision == "tf32", "hardware": experiments.hardware_name(ctx.device)}


def _tracer(ctx: experiments.Context, device: torch.device) -> Tracer:
    if device.type == ctx.device.type:
        return ctx.tracer()
    # a CPU deployable from a GPU notebook: its energy is the CPU's (RAPL, else the estimate)
    return experiments.device_tracer(device, "auto", ctx.cfg.sampling_interval_s)


def _test_images(loader, n: int) -> torch.Tensor:
    xs, have = [], 0
    for x, _ in loader:
        xs.append(x)
        have += x.shape[0]
        if have >= n:
            break
    return torch.cat(xs)[:n]


def run_quantized(ctx: experiments.Context, model_name: str, precision: str, seed: int,
                  backend: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Quantize the shared base model of ``model_name`` to ``precision``; measure Acc, TEC and IEC.

    ``backend`` (None: ``ctx.cfg.backend``) is resolved as :func:`variant` does; the run's config
    records the backend used and where the deployable runs. See :func:`run_variant`.
    """
    return run_variant(ctx, model_name, seed, variant(precision, backend or ctx.cfg.backend, ctx.device), progress)


def run_variant(ctx: experiments.Context, model_name: str, seed: int, v: Variant,
                progress: bool = True) -> dict[str, Any]:
    """The run of one planned variant (:func:`greenlib.quantize.plan`), cached in the store: a
    complete run is returned as stored. Raises QuantizationError (naming the model and precision)
    for a variant that cannot be measured here, and if an int8 deployable runs no int8 kernel.
    """
    precision = v.precision
    if v.skip:
        raise QuantizationError(f"{model_name} {v.label}: {v.skip}")
    cfg = run_config(ctx, model_name, seed, v)
    run = ctx.store.open(cfg, environment=ctx.environment, force=ctx.cfg.force)
    if run.complete:
        return run.result
    model, base = experiments.base_model(ctx, model_name, seed, epochs=ctx.cfg.base_epochs, progress=progress)
    if base["run_id"] != cfg["base_run_id"]:  # experiments.base_run_id drifted from base_model
        raise RuntimeError(f"base run {base['run_id']} is not the expected {cfg['base_run_id']}")
    seed_everything(seed)
    ds, bs = ctx.dataset, ctx.cfg.iec_batch_size
    calib = (calibration_batches(ds.train_x, ds.mean, ds.std, cfg["calib_images"], ctx.cfg.batch_size, v.device)
             if cfg["calib_images"] else [])
    _, test_loader = make_loaders(ds, ctx.cfg.loader, bs, v.device, seed=seed)
    with _tracer(ctx, v.device) as tracer:
        with tracer.window(STAGE):
            dep = quantize(model, precision, calib, backend=v.backend, device=v.device,
                           calibrator=ctx.cfg.calibrator, batch_size=bs, name=model_name)
        cal = tracer.windows[STAGE].to_dict() | {"calibration_images": dep.calibration_images,
                                                 "calibration_batches": len(calib), "deployable": dep.describe()}
        run.save_stage(STAGE, cal, experiments.stage_samples(tracer, cal))
        images = _test_images(test_loader, max(bs * 8, 512)).to(dep.device, dep.input_dtype)
        evidence = kernel_evidence(dep, images[:bs])
        atomic_write_json(run.folder / "kernels.json", evidence | {"kernel_path": dep.kernel_path})
        if precision == "int8":
            require_int8(evidence, f"{model_name} {v.label}")
        acc = evaluate(dep, test_loader, v.device)
        iec = measure_inference(dep, images, tracer, batch_size=bs, min_seconds=ctx.cfg.iec_min_seconds,
                                precision=precision, backend=v.backend)
        run.save_stage("inference", iec, experiments.stage_samples(tracer, iec))
    info = model_info(model_name, num_classes=ds.num_classes)
    base_stage = base["stages"]["base_training"]
    sources = [base["metrics"]["energy_measured_by"], cal["energy_source"], iec["energy_source"]]
    return run.finish({
        **experiments.acc_metrics(acc),
        "base_acc": base["metrics"]["acc"],
        "tec_wh": base_stage["energy_wh"] + cal["energy_wh"], "tec_j": base_stage["energy_j"] + cal["energy_j"],
        "tec_base_wh": base_stage["energy_wh"], "tec_calibration_wh": cal["energy_wh"],
        "calibration_elapsed_s": cal["elapsed_s"], "calibration_images_used": dep.calibration_images,
        **experiments.iec_metrics(iec), "inference_batch_size": bs,
        "energy_measured_by": " + ".join(dict.fromkeys(map(str, sources))),
        "estimated": bool(base["metrics"].get("estimated") or cal.get("estimated") or iec.get("estimated")),
        "params": info["params"], "flops_per_image": info["flops_per_image"],
        "backend_reason": v.why, "kernel_path": dep.kernel_path,
        "int8_kernels": ", ".join(evidence["int8_ops"]),
        "cpu_threads": torch.get_num_threads() if v.device.type == "cpu" else None,
        "dataset_description": ds.description})


def stored_runs(cfg: Resolved) -> pd.DataFrame:
    """The stored quantization runs these notebook parameters ask for, on any hardware.

    ``backend="auto"`` takes every backend; int8 runs must match ``calib_images`` and ``calibrator``.
    Runs stored before the TF32 policy (no ``tf32`` in their config) are left out, with a warning
    saying how many: their "fp32" ran with TF32 convolutions.
    """
    df = load_runs(cfg.profile, model=cfg.models, seed=cfg.seeds, precision=cfg.precisions,
                   **quantization_config(cfg))
    if df.empty:
        return df
    keep = (df["precision"] != "int8") | ((df["calib_images"] == cfg.calib_images)
                                         & (df["calibrator"] == cfg.calibrator))
    if cfg.backend != "auto":
        keep &= df["backend"] == cfg.backend
    recorded = df["tf32"].notna() if "tf32" in df else pd.Series(False, index=df.index)
    if (keep & ~recorded).any():
        warnings.warn(f"{int((keep & ~recorded).sum())} stored quantization run(s) of profile {cfg.profile!r} predate "
                      "the TF32 policy (no 'tf32' in their config: their fp32 ran as TF32) and are left out; "
                      "run notebook 03 again to measure them", stacklevel=2)
    keep &= recorded
    if recorded.any():
        keep &= df["tf32"].astype(bool) == (df["precision"] == "tf32")
    return df[keep].reset_index(drop=True)

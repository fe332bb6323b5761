"""Sensitivity studies (the paper's Section 4.3): how the measurement itself moves the numbers.

:func:`run_sampling_study` is notebook 11's run: train a model for a few epochs while a fast NVML
tracer (both power fields, energy counter at the window edges) and one ``nvidia-smi -q -x`` tracer
per interval (the paper's method) record the same window; store every series and each one's
error against the counter.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from .config import Resolved
from .experiments import Context, hardware_name, shared_config
from .io import atomic_write_text
from .models import build_model
from .results import Run
from .tracer import available_sources, read_trace
from .tracer.accuracy import compare_to_counter, trace_all_sources
from .train import Trainer, TrainConfig, seed_everything

STUDY_WINDOW = "training"


def sampling_config(cfg: Resolved) -> dict[str, Any]:
    """The sampling study's config without seed and hardware (what selects stored runs)."""
    return {"kind": "sampling_rate", "model": cfg.model, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "base_interval_s": cfg.base_interval_s, "smi_intervals_s": list(cfg.smi_intervals_s),
            **shared_config(cfg)}


def _sources(ctx: Context) -> tuple[str, list[float], Any]:
    """(fast source, smi intervals that can run, gpus) on this machine."""
    if ctx.device.type != "cuda":
        return "cpu", [], None
    avail = available_sources()
    fast = "counter" if avail.get("counter") == "ok" else "nvml"
    smi = [float(x) for x in ctx.cfg.smi_intervals_s] if avail.get("smi") == "ok" else []
    return fast, smi, (ctx.device.index or 0,)


def run_sampling_study(ctx: Context, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` for ``cfg.epochs`` epochs under every tracer; cached in the store.

    On a machine without a GPU the only series is the ``cpu`` source's, which then plays the
    reference (its energy is estimated unless RAPL is readable): the notebook says so.
    """
    cfg = ctx.cfg
    bad = [x for x in cfg.smi_intervals_s if not isinstance(x, (int, float)) or isinstance(x, bool) or x <= 0]
    if bad:
        raise ValueError(f"smi_intervals_s has {bad[0]!r}; every interval must be a number of seconds > 0")
    config = sampling_config(cfg) | {"seed": seed, "hardware": hardware_name(ctx.device)}
    run = ctx.store.open(config, environment=ctx.environment, force=cfg.force)
    if run.complete:
        return run.result
    fast_source, smi_intervals, gpus = _sources(ctx)
    seed_everything(seed)
    model = build_model(cfg.model, num_classes=ctx.dataset.num_classes).to(ctx.device)
    train_loader, _ = ctx.loaders(seed)
    trainer = Trainer(model, train_loader, TrainConfig(epochs=cfg.epochs), ctx.device)
    cpu = ctx.device.type == "cpu"
    fast, smi, summary = trace_all_sources(
        lambda tracer: trainer.fit(tracer, STUDY_WINDOW, progress=progress), gpus=gpus, fast_source=fast_source,
        base_interval_s=cfg.base_interval_s, smi_intervals_s=smi_intervals, lead_s=0.3 if cpu else 3.0,
        tail_s=0.5 if cpu else 2.0, sync=(lambda: None) if cpu else torch.cuda.synchronize, window="load")
    fast.save(run.folder / "traces" / f"fast-{fast.source_name}")
    for x, tr in smi.items():
        tr.save(run.folder / "traces" / f"smi-{x:g}s")
    rows, info = compare_to_counter(STUDY_WINDOW, fast, smi, cfg.base_interval_s)
    atomic_write_text(run.folder / "errors.csv", pd.DataFrame(rows).to_csv(index=False))
    run.save_stage(STUDY_WINDOW, summary)
    window = fast.windows["load"]
    return run.finish({
        "window_s": info["window_s"], "reference_energy_j": info["counter_energy_j"],
        "reference_mean_power_w": info["counter_energy_j"] / info["window_s"],
        "reference_source": fast.source_name, "energy_measured_by": window.energy_source,
        "estimated": bool(window.estimated), "smi_achieved_interval_s": info["smi_achieved_interval_s"],
        "smi_failed_samples": info["smi_failed_samples"], "final_train_loss": trainer.history[-1].train_loss})


def study_errors(run: Run) -> pd.DataFrame:
    """The stored error table of one sampling study (one row per source, field and interval)."""
    return pd.read_csv(run.folder / "errors.csv")


def study_series(run: Run) -> dict[str, pd.DataFrame]:
    """Every stored power series of one study: ``{"fast-counter": samples, "smi-0.1s": ...}``."""
    return {p.name: read_trace(p).samples for p in sorted((run.folder / "traces").iterdir()) if p.is_dir()}

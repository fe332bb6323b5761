"""How far each sampled power series is from the NVML energy counter over the same window.

Used by ``scripts/measure_tracer.py`` (synthetic steady and bursty loads) and notebook
11_sampling_rate (a training run): :func:`trace_all_sources` runs one fast counter-source tracer and
one ``nvidia-smi`` tracer per interval around the same work, :func:`compare_to_counter` tabulates
each series' energy and relative error, raw and lag-corrected (docs/measurement.md).
"""
from __future__ import annotations

import math
import statistics
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from .core import Tracer
from .summary import trapezoid_energy_j

SMI_INTERVALS_S = (0.1, 0.5, 1.0)
NVML_INTERVALS_S = (0.1, 0.5, 1.0)
MAX_PHASES = 10
TABLE_COLUMNS = (
    "load", "source", "field", "interval_s", "how", "n_phases", "n_samples", "achieved_interval_s",
    "energy_j", "rel_err_pct", "rel_err_pct_min", "rel_err_pct_max", "mean_abs_rel_err_pct",
    "energy_corrected_j", "rel_err_corrected_pct", "rel_err_corrected_pct_min", "rel_err_corrected_pct_max",
    "mean_abs_rel_err_corrected_pct", "counter_energy_j", "window_s",
    "gpu_name", "driver", "torch", "date_utc",  # provenance on every row (the rest is in meta.json)
)


def trace_all_sources(work: Callable[[Tracer], Any], *, gpus, fast_source: str = "counter",
                      base_interval_s: float = 0.02, smi_intervals_s: Sequence[float] = SMI_INTERVALS_S,
                      lead_s: float = 3.0, tail_s: float = 2.0, sync: Callable[[], None] = lambda: None,
                      window: str = "load", tracer: Callable[..., Tracer] = Tracer
                      ) -> tuple[Tracer, dict[float, Tracer], Any]:
    """Run ``work(fast_tracer)`` inside one window of every tracer; returns (fast, smi tracers, result).

    The tracers start ``lead_s`` before the work (idle: the averaged field settles) and each keeps
    sampling ``tail_s`` after it; all windows begin and end at the same instant (``sync`` runs
    first, e.g. ``torch.cuda.synchronize``). ``smi_intervals_s=()`` runs no smi tracer. ``work``
    may open windows of its own on the fast tracer (a trainer's epochs).
    """
    common = dict(gpus=gpus, sync_cuda=False, tail_s=tail_s)
    fast = tracer(source=fast_source, interval_s=base_interval_s, **common)
    smi = {x: tracer(source="smi", interval_s=x, smi_timeout_s=2.0, **common) for x in smi_intervals_s}
    tracers = [fast, *smi.values()]
    for tr in tracers:
        tr.start()
    try:
        time.sleep(lead_s)
        sync()
        for tr in tracers:
            tr.begin_window(window)
        result = work(fast)
        sync()
        errors: list[BaseException] = []

        def end(tr: Tracer) -> None:  # each waits for its own tail of samples: end them in parallel
            try:
                tr.end_window(window)
            except BaseException as e:  # re-raised in the calling thread below
                errors.append(e)

        enders = [threading.Thread(target=end, args=(tr,)) for tr in tracers]
        for th in enders:
            th.start()
        for th in enders:
            th.join()
        if errors:
            raise errors[0]
    finally:
        for tr in tracers:
            tr.stop()
    return fast, smi, result


def subsample_indices(t: np.ndarray, interval_s: float, phase_s: float) -> np.ndarray:
    """Indices of the samples nearest to the grid t[0] + phase + k * interval."""
    grid = np.arange(t[0] + phase_s, t[-1] + 1e-9, interval_s)
    idx = np.clip(np.searchsorted(t, grid), 1, len(t) - 1)
    left_closer = (grid - t[idx - 1]) < (t[idx] - grid)
    return np.unique(np.where(left_closer, idx - 1, idx))


def _energies(t, p, a, b, interval_s, lag_s):
    hold = 2 * interval_s
    raw, _ = trapezoid_energy_j(t, p, a, b, hold)
    corr = trapezoid_energy_j(t - lag_s, p, a, b, hold + lag_s)[0] if lag_s > 0 else math.nan
    return raw, corr


def _err(e: float, ref: float) -> float:
    return 100.0 * (e / ref - 1.0) if ref and math.isfinite(ref) and math.isfinite(e) else math.nan


def _stats(errs: list[float]) -> tuple[float, float, float]:
    errs = [e for e in errs if math.isfinite(e)]
    if not errs:
        return math.nan, math.nan, math.nan
    return min(errs), max(errs), statistics.fmean(abs(e) for e in errs)


def error_row(load, source, field, interval_s, how, t, p, a, b, lag_s, ref, phases, window_s, subsample=True):
    """One table row: energies over [a, b] for each grid phase (phase 0 reported, spread kept).

    ``subsample``: pick the samples nearest a grid of ``interval_s`` (else use every sample).
    """
    raws, corrs, n_samples, gaps = [], [], [], []
    for phase in phases:
        idx = subsample_indices(t, interval_s, phase) if subsample else np.arange(len(t))
        ts, ps = t[idx], p[idx]
        raw, corr = _energies(ts, ps, a, b, interval_s, lag_s)
        raws.append(raw)
        corrs.append(corr)
        inside = ts[(ts >= a) & (ts <= b) & np.isfinite(ps)]
        n_samples.append(int(inside.size))
        gaps.append(float(np.median(np.diff(inside))) if inside.size > 1 else math.nan)
    e_lo, e_hi, e_abs = _stats([_err(e, ref) for e in raws])
    c_lo, c_hi, c_abs = _stats([_err(e, ref) for e in corrs])
    return {
        "load": load, "source": source, "field": field, "interval_s": interval_s, "how": how,
        "n_phases": len(phases), "n_samples": n_samples[0], "achieved_interval_s": gaps[0],
        "energy_j": raws[0], "rel_err_pct": _err(raws[0], ref), "rel_err_pct_min": e_lo, "rel_err_pct_max": e_hi,
        "mean_abs_rel_err_pct": e_abs, "energy_corrected_j": corrs[0], "rel_err_corrected_pct": _err(corrs[0], ref),
        "rel_err_corrected_pct_min": c_lo, "rel_err_corrected_pct_max": c_hi, "mean_abs_rel_err_corrected_pct": c_abs,
        "counter_energy_j": ref, "window_s": window_s,
    }


def compare_to_counter(load: str, fast: Tracer, smi: dict[float, Tracer], base_s: float, window: str = "load",
                       nvml_intervals_s: Sequence[float] = NVML_INTERVALS_S) -> tuple[list[dict], dict]:
    """Energy of ``window`` from every series, and each one's error against the counter.

    ``fast`` is a counter-source tracer sampling every ``base_s`` (both NVML power fields); the
    NVML rows at ``nvml_intervals_s`` are subsampled from it over up to ``MAX_PHASES`` grid phases
    (phase 0 reported, min/max kept); ``smi`` maps an interval to an smi tracer that ran at the
    same time. One row per (source, field, interval) plus the reference row; ``load`` labels them.
    """
    ref_w = fast.windows[window]
    a_abs, b_abs = fast.t0_perf_s + ref_w.start_s, fast.t0_perf_s + ref_w.end_s
    ref = ref_w.counter_energy_j if fast.source.has_counter else math.nan
    if fast.source_name == "cpu":
        ref = ref_w.energy_j  # dry run: the cpu counter (RAPL or the CPU-time estimate) plays the counter
    window_s = b_abs - a_abs
    lag = fast.lag_shift_s  # half the averaging window for NVML; 0 for the dry run's cpu source
    rows = [{**{c: math.nan for c in TABLE_COLUMNS}, "load": load, "source": fast.source_name, "field": "energy",
             "how": "counter delta at the window edges (reference)", "energy_j": ref, "rel_err_pct": 0.0,
             "counter_energy_j": ref, "window_s": window_s, "interval_s": math.nan}]

    s = fast.series()
    t = s["t_s"]
    a, b = a_abs - fast.t0_perf_s, b_abs - fast.t0_perf_s
    sampled_name = "nvml" if fast.source_name in ("counter", "nvml") else fast.source_name
    for field, col, lag_s in (("average", "power_average_w", lag), ("instant", "power_instant_w", 0.0)):
        p = s[col]
        rows.append(error_row(load, sampled_name, field, base_s, f"every sample of the {base_s:g} s series",
                         t, p, a, b, lag_s, ref, [0.0], window_s, subsample=False))
        for x in nvml_intervals_s:
            n = min(MAX_PHASES, max(1, round(x / base_s)))
            phases = list(np.arange(n) * (x / n))
            rows.append(error_row(load, sampled_name, field, x, f"subsampled from the {base_s:g} s series",
                             t, p, a, b, lag_s, ref, phases, window_s))
    for x, tr in smi.items():
        ss = tr.series()
        a_s, b_s = a_abs - tr.t0_perf_s, b_abs - tr.t0_perf_s
        for field, col, lag_s in (("average", "power_average_w", tr.avg_window_s / 2),
                                  ("instant", "power_instant_w", 0.0)):
            rows.append(error_row(load, "smi", field, x, f"own tracer at {x:g} s (nvidia-smi -q -x per sample)",
                             ss["t_s"], ss[col], a_s, b_s, lag_s, ref, [0.0], window_s, subsample=False))
    info = {"window_s": window_s, "counter_energy_j": ref, "fast_source": fast.source_name,
            "fast_achieved_interval_s": ref_w.achieved_interval_s,
            "smi_achieved_interval_s": {str(x): tr.windows[window].achieved_interval_s for x, tr in smi.items()},
            "smi_median_read_s": {str(x): float(np.nanmedian(tr.series()["read_s"])) if len(tr.series()["read_s"])
                                  else math.nan for x, tr in smi.items()},
            "smi_failed_samples": {str(x): tr.n_failed_samples for x, tr in smi.items()}}
    return rows, info

"""Window summaries: energy over a time range of the shared sample series.

Pure functions of a samples table (``Tracer.samples()`` or a saved ``samples.csv.gz``), so a saved
trace can be re-summarised without a GPU (:func:`summarize`).

Sampled energy is the trapezoid rule over the valid power samples of each device, with the value
at each window edge interpolated between the samples around it (or, within ``max_hold_s`` of the
first/last sample, held). The *lag-corrected* figure does the same on the series shifted back by
``lag_shift_s`` (half the driver's averaging window) when ``power_w`` is a driver average: a
1-second average describes the second before it was read, so it is ~0.5 s late.

Utilisation lags too: the driver's ``gpu_util_pct`` read at ``t`` is the busy share of its last
finished sample period (``util_lag_s``, 0.2 s on the H100 and H200), on average the period centred on
``t - util_lag_s``. A window's mean utilisation therefore averages the samples from
``start + util_lag_s`` on; the ones before describe mostly the time before the window (an idle
set-up, the previous epoch's evaluation).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import numpy as np

NAN = float("nan")
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 calls it trapz

# What ``energy_source`` can say: which figure ``energy_j`` is.
ENERGY_SOURCES: tuple[str, ...] = ("counter", "nvml", "smi", "cpu-rapl", "cpu-estimate")


@dataclass
class WindowSummary:
    """Energy and usage over one named window. Times are seconds since ``Tracer.start()``.

    energy_j is the best figure the source has: the counter delta where a counter exists
    (``energy_source`` "counter" or "cpu-rapl"), the CPU-time estimate ("cpu-estimate"), else the
    sampled energy ("nvml", "smi"). It is NaN, never 0, when nothing valid was measured; ``reason``
    says why. ``counter_energy_j`` holds a hardware counter only; the estimate is ``estimated_energy_j``.
    """

    name: str
    start_s: float
    end_s: float
    elapsed_s: float
    energy_j: float                 # the figure reported (see energy_source), J, all traced devices
    energy_wh: float                # energy_j / 3600, W*h (the paper's unit)
    energy_source: str              # "counter" | "nvml" | "smi" | "cpu-rapl" | "cpu-estimate"
    sampled_energy_j: float         # trapezoid over the power samples, J
    sampled_energy_corrected_j: float  # the same on the lag-corrected series, J (= sampled if no lag)
    counter_energy_j: float         # hardware energy-counter delta (NVML, RAPL), J; NaN without one
    energy_j_per_gpu: dict[int, float]  # energy_j per CUDA ordinal (-1: the CPU)
    net_energy_j: float             # energy_j minus idle power x elapsed_s, J (NaN without a baseline)
    idle_power_w: float             # idle baseline power of the traced devices, W (NaN without)
    mean_power_w: float             # energy_j / elapsed_s, W
    mean_gpu_util_pct: float        # mean over the window's samples from start + util_lag_s on, all devices, %
    mean_mem_util_pct: float        # the same for the memory controller, %
    max_mem_used_mib: float         # largest memory use of one device in the window, MiB
    n_samples: int                  # sampler ticks in the window with a valid power reading
    n_missing_samples: int          # sampler ticks in the window without one (failed or N/A)
    requested_interval_s: float     # the sampling interval asked for, s
    achieved_interval_s: float      # median gap between valid samples in the window, s
    max_gap_s: float                # longest stretch of the window without a valid sample, s
    lag_shift_s: float              # shift applied to the corrected series, s (0: none)
    estimated: bool                 # True when the energy is an estimate, not a measurement
    reason: str | None              # why energy_j is NaN or estimated; None otherwise
    gpus: list[int] = field(default_factory=list)  # the traced devices (CUDA ordinals; -1 = CPU)
    estimated_energy_j: float = NAN  # the CPU-time estimate, J (source "cpu-estimate"); NaN otherwise
    util_lag_s: float = 0.0         # utilisation samples before start + util_lag_s are left out of the means, s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WindowSummary":
        """Inverse of :meth:`to_dict`, also for dicts read back from JSON (string keys)."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "estimated_energy_j" not in kw and kw.get("energy_source") == "cpu-estimate":
            # stored before estimated_energy_j existed: counter_energy_j held the estimate
            kw["estimated_energy_j"], kw["counter_energy_j"] = kw.get("counter_energy_j"), NAN
        kw["energy_j_per_gpu"] = {int(k): _f(v) for k, v in (kw.get("energy_j_per_gpu") or {}).items()}
        for k, v in list(kw.items()):
            if v is None and k not in ("reason",):
                kw[k] = NAN
        return cls(**kw)

    def line(self) -> str:
        """One line for verbose mode."""
        star = " (ESTIMATE)" if self.estimated else ""
        util = "" if math.isnan(self.mean_gpu_util_pct) else f", GPU util {self.mean_gpu_util_pct:.0f}%"
        why = f" [{self.reason}]" if self.reason and math.isnan(self.energy_j) else ""
        return (f"[tracer] {self.name}: {self.elapsed_s:.2f} s, {self.energy_j:.1f} J = {self.energy_wh:.5f} Wh "
                f"({self.energy_source}){star}, mean {self.mean_power_w:.1f} W{util}, {self.n_samples} samples "
                f"every {self.achieved_interval_s:.3f} s (asked {self.requested_interval_s:g} s){why}")


def _f(v: Any) -> float:
    return NAN if v is None else float(v)


def trapezoid_energy_j(t_s: Sequence[float], power_w: Sequence[float], start_s: float, end_s: float,
                       max_hold_s: float) -> tuple[float, str | None]:
    """Energy in J over ``[start_s, end_s]`` from power samples, and why it is NaN if it is.

    Non-finite samples are dropped. Each edge's power is interpolated between its neighbouring
    samples, or held from the nearest one if that is at most ``max_hold_s`` away.
    """
    t = np.asarray(t_s, dtype=float)
    p = np.asarray(power_w, dtype=float)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    if t.size == 0:
        return NAN, "no valid power sample"
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]

    def edge(x: float) -> float | None:
        if t[0] <= x <= t[-1]:
            return float(np.interp(x, t, p))
        near = 0 if x < t[0] else -1
        return float(p[near]) if abs(x - t[near]) <= max_hold_s else None

    for x in (start_s, end_s):
        if edge(x) is None:
            d = min(abs(x - t[0]), abs(x - t[-1]))
            return NAN, (f"window edge at {x:.3f} s is {d:.3f} s from the nearest valid power sample "
                         f"(at most {max_hold_s:.3f} s is bridged)")
    inner = (t > start_s) & (t < end_s)
    tt = np.concatenate(([start_s], t[inner], [end_s]))
    pp = np.concatenate(([edge(start_s)], p[inner], [edge(end_s)]))
    return float(_trapezoid(pp, tt)), None


def _median_gap(t: np.ndarray) -> float:
    t = np.unique(t[np.isfinite(t)])
    return float(np.median(np.diff(t))) if t.size >= 2 else NAN


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else NAN


def _nanmax(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.max()) if x.size else NAN


def utilisation_means(samples, start_s: float, end_s: float, labels: Sequence[int],
                      util_lag_s: float = 0.0) -> tuple[float, float]:
    """Mean GPU and memory-controller utilisation (%) of ``[start_s, end_s]`` over ``labels``: the
    samples from ``start_s + util_lag_s`` on (the module's docstring says why); NaN without one."""
    t = np.asarray(samples["t_s"], dtype=float)
    rows = (t >= start_s + util_lag_s) & (t <= end_s) & np.isin(np.asarray(samples["gpu"], dtype=np.int64),
                                                                  list(labels))

    def mean(name: str) -> float:
        return _nanmean(np.asarray(samples[name], dtype=float)[rows]) if name in samples else NAN
    return mean("gpu_util_pct"), mean("mem_util_pct")


def summarize(samples, name: str, start_s: float, end_s: float, *, requested_interval_s: float,
              sampled_label: str, labels: Sequence[int], counter_j: dict[int, float] | None = None,
              counter_label: str | None = None, counter_error: str | None = None, lag_shift_s: float = 0.0,
              idle_power_w: dict[int, float] | None = None, estimated: bool = False,
              estimate_note: str | None = None, util_lag_s: float = 0.0) -> WindowSummary:
    """Summarise ``[start_s, end_s]`` of a samples table (columns as ``Tracer.samples()``; a
    DataFrame or a dict of arrays).

    ``counter_j`` holds the counter delta per label where the source has a counter (NaN entries
    or ``counter_error`` mean the read failed: the sampled figure is reported instead).
    ``util_lag_s``: the utilisation means leave out the samples before ``start_s + util_lag_s``
    (the driver's sample period; NaN where the window holds none after it).
    """
    labels = list(labels)
    elapsed = float(end_s - start_s)
    t_all = np.asarray(samples["t_s"], dtype=float)
    gpu_all = np.asarray(samples["gpu"], dtype=np.int64)
    p_all = np.asarray(samples["power_w"], dtype=float)
    valid_rows = np.isfinite(p_all)
    in_win = (t_all >= start_s) & (t_all <= end_s)

    sampled: dict[int, float] = {}
    corrected: dict[int, float] = {}
    reasons: list[str] = []
    for g in labels:
        mine = gpu_all == g
        t, p = t_all[mine], p_all[mine]
        hold = 2 * max(requested_interval_s, _nan0(_median_gap(t[np.isfinite(p)])))
        e, why = trapezoid_energy_j(t, p, start_s, end_s, hold)
        sampled[g] = e
        if why:
            reasons.append(f"GPU {g}: {why}" if g >= 0 else why)
        if lag_shift_s > 0:
            corrected[g], _ = trapezoid_energy_j(t - lag_shift_s, p, start_s, end_s, hold + lag_shift_s)
        else:
            corrected[g] = e
    sampled_total = _sum(sampled.values())
    corrected_total = _sum(corrected.values())

    counter_total = NAN
    if counter_j is not None:
        counter_total = _sum(counter_j.values())
    # an estimating source's "counter" (the CPU-time estimate) is no hardware counter: kept apart
    estimated_total = counter_total if estimated else NAN
    use_counter = counter_label is not None and math.isfinite(counter_total)
    if use_counter:
        energy, per_gpu, source = counter_total, dict(counter_j), counter_label
        reason = None
    else:
        energy, per_gpu, source = sampled_total, sampled, sampled_label
        reason = "; ".join(dict.fromkeys(reasons)) if math.isnan(energy) else None
        if counter_label is not None:
            why = counter_error or "counter reading missing"
            reason = f"energy counter failed ({why}); sampled energy reported" + (f"; {reason}" if reason else "")
    if estimated and estimate_note:
        reason = estimate_note if reason is None else f"{estimate_note}; {reason}"

    # usage statistics over the samples inside the window
    win = in_win & np.isin(gpu_all, labels)
    ticks = np.unique(t_all[win])
    valid_ticks = np.unique(t_all[win & valid_rows])
    edges = np.concatenate(([start_s], valid_ticks, [end_s]))
    idle_w = _sum((idle_power_w or {}).get(g, NAN) for g in labels) if idle_power_w else NAN

    def col(name_: str) -> np.ndarray:
        return np.asarray(samples[name_], dtype=float)[win] if name_ in samples else np.array([])

    gpu_util, mem_util = utilisation_means(samples, start_s, end_s, labels, util_lag_s)

    return WindowSummary(
        name=name, start_s=float(start_s), end_s=float(end_s), elapsed_s=elapsed,
        energy_j=energy, energy_wh=energy / 3600.0, energy_source=source,
        sampled_energy_j=sampled_total, sampled_energy_corrected_j=corrected_total,
        counter_energy_j=NAN if estimated else counter_total, energy_j_per_gpu={int(k): float(v) for k, v in per_gpu.items()},
        net_energy_j=energy - idle_w * elapsed if idle_power_w else NAN, idle_power_w=idle_w,
        mean_power_w=energy / elapsed if elapsed > 0 else NAN,
        mean_gpu_util_pct=gpu_util, mean_mem_util_pct=mem_util,
        max_mem_used_mib=_nanmax(col("mem_used_mib")),
        n_samples=int(valid_ticks.size), n_missing_samples=int(ticks.size - valid_ticks.size),
        requested_interval_s=float(requested_interval_s), achieved_interval_s=_median_gap(valid_ticks),
        max_gap_s=float(np.diff(edges).max()) if edges.size >= 2 else NAN,
        lag_shift_s=float(lag_shift_s), estimated=bool(estimated), reason=reason, gpus=labels,
        estimated_energy_j=estimated_total, util_lag_s=float(util_lag_s),
    )


def _sum(values) -> float:
    values = list(values)
    return float(sum(values)) if values else NAN


def _nan0(x: float) -> float:
    return 0.0 if math.isnan(x) else x

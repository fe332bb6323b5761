"""What every energy source provides, and the names shared by the tracer's modules.

A *source* reads the devices it was opened on and returns one record per device. The tracer's
sampling thread calls :meth:`Source.read` on a fixed-rate clock; a source that has a cumulative
energy counter is also read synchronously at window edges through :meth:`Source.read_counter_j`.
"""
from __future__ import annotations

import math
from typing import Any

NAN = float("nan")

# Columns of one sample record (one device at one instant). Units are in the names; a reading the
# device does not report is NaN, never 0.
READING_FIELDS: tuple[str, ...] = (
    "power_w",            # the power figure that feeds the sampled energy (see Source.power_is_average)
    "power_instant_w",    # instantaneous board power, W
    "power_average_w",    # power averaged by the driver (1 s on Ampere+/driver 580), W
    "gpu_util_pct",       # % of time a kernel ran over the driver's last sample period
    "mem_util_pct",       # % of time device memory was read or written
    "mem_used_mib",       # device memory in use, MiB
    "sm_clock_mhz",       # SM clock, MHz
    "temp_c",             # GPU temperature, degrees C
    "energy_counter_j",   # cumulative energy counter, J (NaN where the source has none)
)

# Columns of the tracer's time series (``Tracer.samples()``), in order.
SAMPLE_COLUMNS: tuple[str, ...] = (
    "t_s",             # seconds since Tracer.start(), monotonic clock; the middle of the read call
    "gpu",             # CUDA ordinal as the traced process sees it; -1 = the CPU package(s)
    "physical_index",  # NVML / nvidia-smi index (-1 for the CPU)
    "valid",           # False when the read failed (then every reading is NaN)
    *READING_FIELDS,
    "read_s",          # how long the read call took, s
)

CPU_LABEL = -1  # the ``gpu`` value of CPU rows


class SourceError(RuntimeError):
    """A source could not be read (binary missing, timed out, garbage output, device lost)."""


class TracerWarning(RuntimeWarning):
    """Something went wrong while tracing that did not stop the traced work."""


def empty_reading() -> dict[str, float]:
    """A record with every reading missing."""
    return {k: NAN for k in READING_FIELDS}


def as_float(value: Any) -> float:
    """``value`` as a float, or NaN when it is None or not a finite number."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return NAN
    return out if math.isfinite(out) else NAN


NVIDIA_UTIL_PERIOD_S = 0.2
"""The sample period of the NVIDIA driver's utilisation figures (NVML's ``utilization.gpu`` and
``.memory``, which nvidia-smi reports too), s. NVML documents 1/6 s to 1 s by product; read off this
repository's traces, the value changes every 0.20 s on the H100 and the H200 (median gap between
changes: ``data/measurements/tracer/h100/traces/bursty/counter-0.02s``, sampled every 0.02 s, and
the quick runs on the H200; docs/training.md)."""


class Source:
    """Base class of energy sources. Subclasses fill the attributes and implement :meth:`read`.

    Attributes
    ----------
    name: the source's registry name (``"smi"``, ``"nvml"``, ``"counter"``, ``"cpu"``, or a test's).
    labels: one entry per traced device: its CUDA ordinal (``-1`` for the CPU).
    physical: the NVML / nvidia-smi index of each device (``-1`` for the CPU).
    sampled_label: what ``energy_source`` says when the energy is integrated from samples.
    counter_label: what ``energy_source`` says when it is a counter delta (None: no counter).
    power_is_average: ``power_w`` is a driver-averaged figure (lags the load by half its window).
    util_period_s: the driver's utilisation sample period, s: ``gpu_util_pct`` and ``mem_util_pct``
        read at ``t`` describe the last finished period, on average the one centred on
        ``t - util_period_s`` (0: the figures describe the moment they are read).
    estimated: readings are an estimate, not a measurement (the CPU-time fallback).
    estimate_note: why, for ``WindowSummary.reason`` when ``estimated``.
    max_read_s: the longest one read may block (e.g. a subprocess timeout), s.
    """

    name: str = "source"
    labels: list[int]
    physical: list[int]
    sampled_label: str = "source"
    counter_label: str | None = None
    power_is_average: bool = False
    util_period_s: float = 0.0
    estimated: bool = False
    estimate_note: str | None = None
    max_read_s: float = 0.1

    @property
    def has_counter(self) -> bool:
        return self.counter_label is not None

    def read(self) -> list[dict[str, float]]:
        """One record per device in ``labels`` order, keys :data:`READING_FIELDS`.

        Raises SourceError (or any exception) when nothing could be read; the sampler records the
        sample as missing.
        """
        raise NotImplementedError

    def read_counter_j(self) -> dict[int, float]:
        """Cumulative energy in J per label (only where ``has_counter``). Raises SourceError."""
        raise SourceError(f"source {self.name!r} has no energy counter")

    def cancel(self) -> None:
        """Interrupt a read in progress (called from another thread at stop). Default: nothing."""

    def close(self) -> None:
        """Release the devices. Default: nothing."""

    def describe(self) -> dict[str, Any]:
        """Provenance: device names, driver version, what the power figure is."""
        return {"source": self.name}

"""The ``cpu`` source, for machines without a GPU (tests, CI smoke runs).

Where ``/sys/class/powercap/intel-rapl:N/energy_uj`` is readable (often root only) the package
energy counters are summed (``energy_source="cpu-rapl"``; wrap-around handled through
``max_energy_range_uj``). Otherwise energy is *estimated* as the CPU time of this process and of
its child processes (DataLoader workers, read through psutil) times :data:`CPU_W_PER_CORE`, and
every summary says so (``estimated=True``, ``energy_source="cpu-estimate"``; the figure is in
``estimated_energy_j``, never in ``counter_energy_j``). The estimate is a stand-in that lets the
pipeline run end to end; it is not a measurement. A child that starts and ends between two reads
(one sampling interval) is missed.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .base import CPU_LABEL, NAN, Source, SourceError, empty_reading

RAPL_ROOT = Path("/sys/class/powercap")

CPU_W_PER_CORE: float = 10.0
"""Watts charged per second of process CPU time by the estimate: a round figure for one busy core
of a 2020s server CPU (e.g. 280 W TDP / 32 cores ~ 9 W; the idle share of the package is ignored)."""


class ProcessTreeCpuTime:
    """CPU seconds (user + system) used by this process and its descendants, e.g. DataLoader workers.

    Each child's CPU time is remembered under (pid, start time) at its last read, so the total never
    falls when a worker exits. The list of children is refreshed at most every ``refresh_s``.
    Without psutil only this process is counted (``counts_children`` is False).
    """

    def __init__(self, refresh_s: float = 1.0):
        try:
            import psutil
        except ImportError:
            psutil = None
        self._psutil = psutil
        self.counts_children = psutil is not None
        self.refresh_s = refresh_s
        self._seen: dict[tuple[int, float], float] = {}
        self._children: list = []
        self._listed_at = -float("inf")

    def _child_seconds(self) -> float:
        ps = self._psutil
        now = time.monotonic()
        if now - self._listed_at >= self.refresh_s:
            try:
                self._children = ps.Process().children(recursive=True)
            except ps.Error:
                self._children = []
            self._listed_at = now
        for child in self._children:
            try:
                with child.oneshot():
                    key = (child.pid, child.create_time())
                    t = child.cpu_times()
            except ps.Error:  # gone, or not ours to read: its last reading stays counted
                continue
            self._seen[key] = max(self._seen.get(key, 0.0), t.user + t.system)
        return sum(self._seen.values())

    def __call__(self) -> float:
        own = time.process_time()
        return own + self._child_seconds() if self.counts_children else own


class Rapl:
    """Sums the energy counters of the RAPL *package* domains (not their sub-zones, which they include)."""

    def __init__(self, root: str | Path = RAPL_ROOT):
        self.root = Path(root)
        self.zones: list[tuple[Path, float]] = []  # (energy_uj file, wrap range in uJ)
        self.problem: str | None = None
        self._find()

    def _find(self) -> None:
        if not self.root.is_dir():
            self.problem = f"{self.root} does not exist"
            return
        for zone in sorted(self.root.glob("intel-rapl:*")):
            if zone.name.count(":") != 1:  # intel-rapl:0:0 is a sub-zone of package 0
                continue
            try:
                name = (zone / "name").read_text().strip()
                if not name.startswith("package"):  # psys would double-count the packages
                    continue
                int((zone / "energy_uj").read_text())
                wrap = float((zone / "max_energy_range_uj").read_text())
            except (OSError, ValueError) as e:
                self.problem = f"{zone}/energy_uj is not readable ({e.__class__.__name__}: {e})"
                continue
            self.zones.append((zone / "energy_uj", wrap))
        if not self.zones and self.problem is None:
            self.problem = f"no RAPL package zone under {self.root}"

    @property
    def ok(self) -> bool:
        return bool(self.zones)

    def read_uj(self) -> list[float]:
        try:
            return [float(f.read_text()) for f, _ in self.zones]
        except (OSError, ValueError) as e:
            raise SourceError(f"RAPL read failed: {e}") from None


class CpuSource(Source):
    """Energy of the CPU package(s) (RAPL) or an estimate from this process's CPU time.

    The source keeps a wrap-corrected cumulative energy that is advanced on every read (sampler
    ticks and window edges), so a counter wraps at most once between two reads.
    """

    name = "cpu"
    labels = [CPU_LABEL]
    physical = [CPU_LABEL]
    power_is_average = False  # power_w is the mean since the previous read; energy_j is the counter
    max_read_s = 0.05

    def __init__(self, rapl_root: str | Path = RAPL_ROOT, w_per_core: float = CPU_W_PER_CORE,
                 cpu_time: Callable[[], float] | None = None):
        self.labels, self.physical = [CPU_LABEL], [CPU_LABEL]
        self.rapl = Rapl(rapl_root)
        self.w_per_core = float(w_per_core)
        self._cpu_time = cpu_time if cpu_time is not None else ProcessTreeCpuTime()
        self._lock = threading.Lock()
        self.estimated = not self.rapl.ok
        self.counter_label = self.sampled_label = "cpu-estimate" if self.estimated else "cpu-rapl"
        if self.estimated:
            whose = ("this process and its child processes (DataLoader workers)"
                     if getattr(self._cpu_time, "counts_children", False) else
                     "this process only (child processes such as DataLoader workers are not counted)")
            self.estimate_note = (f"estimated from the CPU time of {whose} x {self.w_per_core:g} W per core "
                                  f"(no RAPL: {self.rapl.problem})")
        self._last_raw = self._raw()
        self._total_j = 0.0
        self._last_t = time.perf_counter()
        self._last_total_j = 0.0

    def _raw(self) -> list[float]:
        return self.rapl.read_uj() if self.rapl.ok else [self._cpu_time()]

    def _advance(self) -> float:
        """Read the counters, add what was used since the last read, return the total in J."""
        with self._lock:
            raw = self._raw()
            if self.rapl.ok:
                for i, ((_, wrap), new, old) in enumerate(zip(self.rapl.zones, raw, self._last_raw)):
                    delta = new - old
                    if delta < 0:  # the counter wrapped (once: we read far more often than it wraps)
                        delta += wrap
                    self._total_j += delta / 1e6
            else:
                self._total_j += max(0.0, raw[0] - self._last_raw[0]) * self.w_per_core
            self._last_raw = raw
            return self._total_j

    def read(self) -> list[dict[str, float]]:
        total = self._advance()
        now = time.perf_counter()
        with self._lock:
            dt, de = now - self._last_t, total - self._last_total_j
            self._last_t, self._last_total_j = now, total
        rec = empty_reading()
        rec["energy_counter_j"] = total
        rec["power_w"] = rec["power_average_w"] = de / dt if dt > 0 else NAN
        return [rec]

    def read_counter_j(self) -> dict[int, float]:
        return {CPU_LABEL: self._advance()}

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"source": self.name, "energy": self.counter_label, "cpu_count": os.cpu_count()}
        if self.rapl.ok:
            info["rapl_zones"] = [str(f.parent) for f, _ in self.rapl.zones]
        else:
            info["w_per_core"] = self.w_per_core
            info["counts_child_processes"] = bool(getattr(self._cpu_time, "counts_children", False))
            info["rapl_problem"] = self.rapl.problem
        return info

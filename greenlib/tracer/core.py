"""The tracer: a sampling thread, named windows over its time series, and the saved trace.

::

    with Tracer(gpus=(0,)) as tr:              # source="auto": the energy counter where it exists
        with tr.window("base-training"):
            train(...)
        with tr.window("compression"):
            with tr.window("re-training"):     # windows nest and may overlap
                finetune(...)
    tr.windows["base-training"].energy_j       # J; .energy_wh for the paper's unit
    tr.save(run_dir / "energy")                # samples.csv.gz + windows.json

Windows are time ranges over one shared series, so nesting costs nothing. ``stop()`` ends the
windows still open. Every sample is kept (``samples()``); summaries are computed from it
(:mod:`greenlib.tracer.summary`) and, where the source has one, from the energy counter read at
the window edges.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import gzip
import io as _io
import math
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Sequence

from .. import io as gio
from .base import CPU_LABEL, NAN, READING_FIELDS, SAMPLE_COLUMNS, Source, TracerWarning, as_float
from .cpu import RAPL_ROOT
from .nvml import POWER_FIELDS, NvmlDevices
from .smi import Runner
from .sources import SOURCES, open_source
from .summary import WindowSummary, summarize

if TYPE_CHECKING:
    import numpy as np

TRACE_FORMAT = "greenlib.tracer/1"
IDLE_WINDOW = "idle-baseline"


def _check_number(name: str, value: Any, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number of seconds")
    if (positive and value <= 0) or value < 0:
        raise ValueError(f"{name}={value!r} out of range; must be {'> 0' if positive else '>= 0'}")
    return float(value)


class LiveWindow:
    """A window being traced. ``summary`` is set when it ends (and is also in ``Tracer.windows``)."""

    def __init__(self, tracer: "Tracer", name: str, start_s: float, counter_j: dict[int, float] | None,
                 counter_error: str | None):
        self.tracer, self.name, self.start_s = tracer, name, start_s
        self.counter_start_j, self.counter_error = counter_j, counter_error
        self.summary: WindowSummary | None = None

    @property
    def elapsed_s(self) -> float:
        end = self.summary.end_s if self.summary else self.tracer.now_s()
        return end - self.start_s

    def __repr__(self) -> str:
        return f"LiveWindow({self.name!r}, start_s={self.start_s:.3f}, ended={self.summary is not None})"


class Tracer:
    """Samples GPU (or CPU) power on a thread and summarises named windows of the series.

    Parameters
    ----------
    gpus: CUDA ordinals as this process sees them (mapped to physical GPUs through
        ``CUDA_VISIBLE_DEVICES``); None = every visible GPU, or the CPU when there is none.
    source: ``"auto"`` (counter > nvml > smi > cpu), ``"counter"``, ``"nvml"``, ``"smi"``, ``"cpu"``.
    interval_s: sampling interval, s, kept on a fixed-rate clock (a slow read skips ticks; the
        interval achieved is reported per window).
    idle_baseline_s: seconds of idle power sampled in ``start()``; summaries then report
        ``net_energy_j`` (gross minus idle power x elapsed).
    sync_cuda: ``torch.cuda.synchronize()`` the traced GPUs at window edges (only if torch is
        already imported and CUDA initialised), so asynchronous kernels land in their window.
    smi_timeout_s: timeout of one ``nvidia-smi`` call, s; the child is killed after it.
    power_field: ``"average"`` (default) or ``"instant"``: which NVML power field feeds ``power_w``.
    avg_window_s: the driver's averaging window, s; the lag correction shifts an averaged series
        back by half of it.
    tail_s: after a window ends, wait until the series covers this many more seconds before
        summarising (set >= avg_window_s / 2 for the lag-corrected figure to cover the end).
    verbose: print one line per finished window.
    nvml, smi_runner, rapl_root: injection points for tests (an NvmlDevices-like object, a
        ``runner(argv, timeout_s) -> str``, a fake powercap folder).

    Raises ValueError (naming the value and the accepted ones) before anything starts for a bad
    interval, an unknown source, a GPU that is not present, or a named source that cannot work.
    """

    def __init__(self, gpus: Sequence[int] | None = None, source: str = "auto", interval_s: float = 0.1,
                 idle_baseline_s: float = 0.0, sync_cuda: bool = True, smi_timeout_s: float = 2.0, *,
                 power_field: str = "average", avg_window_s: float = 1.0, tail_s: float = 0.0,
                 verbose: bool = False, nvml: NvmlDevices | None = None, smi_runner: Runner | None = None,
                 rapl_root: str | Path = RAPL_ROOT):
        self.interval_s = _check_number("interval_s", interval_s, positive=True)
        self.idle_baseline_s = _check_number("idle_baseline_s", idle_baseline_s, positive=False)
        self.smi_timeout_s = _check_number("smi_timeout_s", smi_timeout_s, positive=True)
        self.avg_window_s = _check_number("avg_window_s", avg_window_s, positive=False)
        self.tail_s = _check_number("tail_s", tail_s, positive=False)
        if power_field not in POWER_FIELDS:
            raise ValueError(f"power_field={power_field!r}; accepted: {', '.join(POWER_FIELDS)}")
        if not isinstance(source, (str, Source)) or (isinstance(source, str) and source not in SOURCES):
            raise ValueError(f"unknown source {source!r}; accepted: {', '.join(SOURCES)}")
        self.sync_cuda, self.verbose, self.power_field = bool(sync_cuda), bool(verbose), power_field

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._warned = False
        self.n_failed_samples = 0
        self.errors: list[str] = []  # distinct failure messages (the first few)

        self._source: Source = open_source(source, gpus, power_field=power_field, smi_timeout_s=self.smi_timeout_s,
                                           nvml=nvml, smi_runner=smi_runner, rapl_root=rapl_root,
                                           warn_once=self._warn_once)
        self.source_name: str = self._source.name
        self.gpus: list[int] = list(self._source.labels)
        self.physical_gpus: list[int] = list(self._source.physical)
        self.lag_shift_s = self.avg_window_s / 2 if self._source.power_is_average else 0.0
        self.device_info: dict[str, Any] = self._source.describe()  # now: NVML is shut down after stop()

        self.windows: dict[str, WindowSummary] = {}
        self.idle_baseline: WindowSummary | None = None
        self.idle_power_w: dict[int, float] | None = None
        self.sampler_cpu_s: float = NAN  # CPU time the sampling thread used, s (set at stop)
        self.started_at_utc: str | None = None
        self._open: dict[str, LiveWindow] = {}
        self._rows: list[tuple] = []
        self._thread: threading.Thread | None = None
        self._stop_evt = threading.Event()
        self._t0 = NAN
        self._last_tick_s = -math.inf
        self._ticks = 0
        self._state = "new"  # new -> running -> stopped

    @property
    def _first_read_wait_s(self) -> float:
        # how long start()/end_window wait for a read in flight: enough for a normal nvidia-smi
        # call (0.09-0.15 s on an H100), never a whole hang (smi_timeout_s)
        return min(self._source.max_read_s, 0.5) + 0.1

    # -- clock ---------------------------------------------------------------------------------
    def now_s(self) -> float:
        """Seconds since ``start()`` on the tracer's clock (``time.perf_counter``)."""
        return time.perf_counter() - self._t0

    @property
    def t0_perf_s(self) -> float:
        """``time.perf_counter()`` at ``start()``: converts sample times between tracers."""
        return self._t0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Tracer":
        """Start the sampling thread; wait for its first sample; sample the idle baseline if asked."""
        if self._state != "new":
            raise RuntimeError(f"this tracer is {self._state}; a Tracer starts once (make a new one)")
        self._state = "running"
        self.started_at_utc = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="greenlib-tracer-sampler", daemon=True)
        self._thread.start()
        with self._cond:  # the first window edge should find a sample before it
            self._cond.wait_for(lambda: self._ticks > 0 or not self._thread.is_alive(),
                                timeout=self.interval_s + self._first_read_wait_s)
        if self.idle_baseline_s > 0:
            try:
                self._sync()
                self._begin(IDLE_WINDOW)
                time.sleep(self.idle_baseline_s)
                s = self._end(IDLE_WINDOW)
            except BaseException:
                self._open.pop(IDLE_WINDOW, None)
                self._shutdown(wait=False)
                raise
            self.idle_baseline = s
            self.idle_power_w = {g: e / s.elapsed_s for g, e in s.energy_j_per_gpu.items()}
            if self.verbose:
                print(s.line())
        return self

    def stop(self) -> None:
        """End the open windows, stop and join the sampling thread, release the devices. Idempotent."""
        self._shutdown(wait=True)

    def _shutdown(self, wait: bool) -> None:
        """``wait``: let the series cover the end of open windows (False when the traced code failed)."""
        if self._state == "stopped":
            return
        first_error: BaseException | None = None
        try:
            if self._state == "running":
                for name in reversed(list(self._open)):
                    try:
                        self._finish(name, wait=wait)
                    except Exception as e:  # keep stopping; re-raised below
                        first_error = first_error or e
        finally:
            self._state = "stopped"
            self._stop_evt.set()
            self._source.cancel()  # kills an nvidia-smi in flight: join() does not wait out a hang
            if self._thread is not None:
                self._thread.join()
            self._source.close()
        if first_error is not None:
            raise first_error

    def __enter__(self) -> "Tracer":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.stop()
        else:  # the traced code failed: clean up, and let *its* exception reach the caller unchanged
            try:
                self._shutdown(wait=False)
            except Exception as e:
                warnings.warn(f"tracer stop failed while handling {exc_type.__name__}: {e}", TracerWarning)
        return False

    def close(self) -> None:
        """Alias of :meth:`stop` (also releases a tracer that never started)."""
        self.stop()

    # -- windows -------------------------------------------------------------------------------
    def begin_window(self, name: str) -> None:
        """Open window ``name`` now. Names are unique per tracer."""
        if self._state != "running":
            raise RuntimeError(f"tracer is {self._state}; begin_window needs a started tracer (call start())")
        if not isinstance(name, str) or not name or name == IDLE_WINDOW:
            raise ValueError(f"window name {name!r} must be a non-empty string other than {IDLE_WINDOW!r}")
        if name in self._open or name in self.windows:
            raise ValueError(f"window {name!r} is already {'open' if name in self._open else 'finished'}; "
                             f"names must be unique (open: {list(self._open)})")
        self._sync()
        self._begin(name)

    def end_window(self, name: str, cover: bool = True) -> WindowSummary:
        """Close window ``name`` and return its summary (also stored in ``windows[name]``).

        ``cover=False``: do not wait for a sample after the window's end (up to one interval, plus
        ``tail_s``) before summarising; the sampled figures then hold the last sample to the end.
        For windows whose energy is the hardware counter's (:attr:`has_counter`), so that code
        tracing many short windows in a row (a trainer's epochs) does not idle its GPU meanwhile.
        """
        return self._finish(name, wait=True, cover=cover)

    @property
    def has_counter(self) -> bool:
        """Whether windows take their energy from a hardware counter (not from the samples)."""
        return bool(self._source.has_counter) and not self._source.estimated

    def _finish(self, name: str, wait: bool, cover: bool = True) -> WindowSummary:
        """``wait=False`` when the traced code failed: neither synchronise CUDA (it may be what
        failed) nor wait for more samples; summarise what there is."""
        if name not in self._open or name == IDLE_WINDOW:
            raise ValueError(f"window {name!r} is not open; open windows: {list(self._open) or 'none'}")
        if wait:
            self._sync()
        s = self._end(name, wait=wait, cover=cover)
        self.windows[name] = s
        if self.verbose:
            print(s.line())
        return s

    @contextlib.contextmanager
    def window(self, name: str, cover: bool = True) -> Iterator[LiveWindow]:
        """Trace the ``with`` body as window ``name``; yields the live window. Nestable.
        ``cover``: as :meth:`end_window`'s.

        The window ends (and is summarised) even if the body raises; the exception propagates.
        """
        self.begin_window(name)
        live = self._open[name]
        try:
            yield live
        except BaseException as exc:
            if name in self._open:  # summarise what was traced, without waiting for more samples
                try:
                    self._finish(name, wait=False)
                except Exception as e:  # never mask the traced code's exception
                    warnings.warn(f"tracer: window {name!r} could not be summarised while handling "
                                  f"{exc.__class__.__name__}: {e}", TracerWarning)
            raise
        else:
            if name in self._open:  # stop() inside the body may have ended it already
                self._finish(name, wait=True, cover=cover)

    def _begin(self, name: str) -> None:
        counter, err = self._read_counter()
        self._open[name] = LiveWindow(self, name, self.now_s(), counter, err)

    def _end(self, name: str, wait: bool = True, cover: bool = True) -> WindowSummary:
        live = self._open[name]
        end_s = self.now_s()
        counter_end, err = self._read_counter()
        if wait and cover:
            self._wait_for_coverage(end_s + self.tail_s)
        del self._open[name]
        counter_delta = None
        if self._source.has_counter:
            err = live.counter_error or err
            if live.counter_start_j is not None and counter_end is not None:
                counter_delta = {g: counter_end[g] - live.counter_start_j[g] for g in self.gpus}
        s = summarize(self.series(), name, live.start_s, end_s, requested_interval_s=self.interval_s,
                      sampled_label=self._source.sampled_label, labels=self.gpus, counter_j=counter_delta,
                      counter_label=self._source.counter_label, counter_error=err, lag_shift_s=self.lag_shift_s,
                      idle_power_w=self.idle_power_w, estimated=self._source.estimated,
                      estimate_note=self._source.estimate_note, util_lag_s=self._source.util_period_s)
        live.summary = s
        return s

    def _read_counter(self) -> tuple[dict[int, float] | None, str | None]:
        if not self._source.has_counter:
            return None, None
        try:
            return self._source.read_counter_j(), None
        except Exception as e:  # reported in the window's reason; the sampled figure stands in
            return None, f"{e.__class__.__name__}: {e}"

    def _wait_for_coverage(self, until_s: float) -> None:
        """Wait until a sample at or after ``until_s`` exists (bounded; no wait once stopped)."""
        limit = until_s - self.now_s() + self.interval_s + self._first_read_wait_s
        with self._cond:
            self._cond.wait_for(lambda: self._last_tick_s >= until_s or self._thread is None
                                or not self._thread.is_alive() or self._stop_evt.is_set(),
                                timeout=max(0.0, limit))

    def _sync(self) -> None:
        if not self.sync_cuda:
            return
        torch = sys.modules.get("torch")  # never import torch here: no torch, no CUDA work to wait for
        if torch is None or not torch.cuda.is_initialized():
            return
        gpus = [g for g in self.gpus if g != CPU_LABEL]
        if not gpus:
            torch.cuda.synchronize()
            return
        n = torch.cuda.device_count()
        for g in gpus:
            if g < n:  # a label CUDA does not know here (NVML mocked, say) holds no work of ours
                torch.cuda.synchronize(g)

    # -- sampling thread -----------------------------------------------------------------------
    def _warn_once(self, message: str) -> None:
        if message not in self.errors and len(self.errors) < 10:
            self.errors.append(message)
        if not self._warned:
            self._warned = True
            warnings.warn(f"tracer: {message} (further failures are counted in n_failed_samples, not warned)",
                          TracerWarning, stacklevel=2)

    def _tick(self) -> None:
        t_before = time.perf_counter()
        try:
            records = self._source.read()
            if len(records) != len(self.gpus):
                raise RuntimeError(f"source returned {len(records)} records for {len(self.gpus)} devices")
            error = None
        except Exception as e:
            records, error = None, e
        t_after = time.perf_counter()
        t = (t_before + t_after) / 2 - self._t0
        read_s = t_after - t_before
        if error is not None:
            if self._stop_evt.is_set():
                return  # the read was cancelled by stop(): not a failure
            self.n_failed_samples += 1
            self._warn_once(f"source {self.source_name!r} sample failed: {error.__class__.__name__}: {error}")
        rows = []
        for i, (g, p) in enumerate(zip(self.gpus, self.physical_gpus)):
            rec = records[i] if records is not None else None
            values = tuple(as_float(rec.get(k)) if rec else NAN for k in READING_FIELDS)
            rows.append((t, g, p, rec is not None, *values, read_s))
        with self._cond:
            self._rows.extend(rows)
            self._last_tick_s = t
            self._ticks += 1
            self._cond.notify_all()

    def _run(self) -> None:
        cpu0 = time.thread_time()
        k = 0
        try:
            while not self._stop_evt.is_set():
                try:
                    self._tick()
                except Exception as e:  # the sampler must outlive any surprise; it is reported, once
                    self.n_failed_samples += 1
                    self._warn_once(f"sampler error: {e.__class__.__name__}: {e}")
                now = self.now_s()
                # fixed-rate clock: the next tick is the next multiple of interval_s after now, so a
                # slow read skips ticks instead of pushing every later sample back
                k = max(k + 1, int(now // self.interval_s) + 1)
                if self._stop_evt.wait(k * self.interval_s - now):
                    break
        finally:
            self.sampler_cpu_s = time.thread_time() - cpu0
            with self._cond:
                self._cond.notify_all()

    # -- results -------------------------------------------------------------------------------
    def series(self) -> dict[str, "np.ndarray"]:
        """The time series as numpy arrays by column (:data:`SAMPLE_COLUMNS`); no pandas needed."""
        import numpy as np

        with self._lock:
            rows = list(self._rows)
        cols = list(zip(*rows)) if rows else [()] * len(SAMPLE_COLUMNS)
        kinds = {"gpu": np.int64, "physical_index": np.int64, "valid": bool}
        return {c: np.asarray(v, dtype=kinds.get(c, float)) for c, v in zip(SAMPLE_COLUMNS, cols)}

    def samples(self):
        """The time series as a pandas DataFrame, columns :data:`SAMPLE_COLUMNS` (one row per device per tick)."""
        import pandas as pd

        return pd.DataFrame(self.series(), columns=list(SAMPLE_COLUMNS))

    @property
    def source(self) -> Source:
        return self._source

    def metadata(self) -> dict[str, Any]:
        """What ``windows.json`` says about the trace besides its windows."""
        return {
            "format": TRACE_FORMAT, "source": self.source_name, "gpus": self.gpus, "physical_gpus": self.physical_gpus,
            "requested_interval_s": self.interval_s, "power_field": self.power_field,
            "avg_window_s": self.avg_window_s, "lag_shift_s": self.lag_shift_s, "tail_s": self.tail_s,
            "idle_baseline_s": self.idle_baseline_s, "started_at_utc": self.started_at_utc,
            "sampled_label": self._source.sampled_label, "counter_label": self._source.counter_label,
            "estimated": self._source.estimated, "estimate_note": self._source.estimate_note,
            "n_failed_samples": self.n_failed_samples, "errors": self.errors,
            "sampler_cpu_s": self.sampler_cpu_s, "device": self.device_info,
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``samples.csv.gz`` and ``windows.json`` into ``folder``, each atomically."""
        folder = Path(folder)
        with self._lock:
            rows = list(self._rows)
        text = _io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(SAMPLE_COLUMNS)
        writer.writerows(rows)  # floats as repr (round-trips exactly); NaN as "nan"
        gio.atomic_write_bytes(folder / "samples.csv.gz", gzip.compress(text.getvalue().encode("utf-8"), mtime=0))
        doc = self.metadata()
        doc["idle_baseline"] = self.idle_baseline.to_dict() if self.idle_baseline else None
        doc["idle_power_w_per_gpu"] = self.idle_power_w
        doc["windows"] = [w.to_dict() for w in self.windows.values()]
        gio.atomic_write_json(folder / "windows.json", doc)
        return folder

    def __repr__(self) -> str:
        return (f"Tracer(source={self.source_name!r}, gpus={self.gpus}, interval_s={self.interval_s:g}, "
                f"state={self._state}, windows={list(self.windows)})")


@contextlib.contextmanager
def trace(name: str = "trace", **tracer_kwargs: Any) -> Iterator[Tracer]:
    """Start a :class:`Tracer` with one window ``name`` around the ``with`` body::

        with trace("inference", gpus=(0,)) as t:
            run()
        t.windows["inference"].energy_j
    """
    tracer = Tracer(**tracer_kwargs)
    with tracer:
        with tracer.window(name):
            yield tracer


class SavedTrace(NamedTuple):
    samples: Any                       # pandas DataFrame
    windows: dict[str, WindowSummary]
    meta: dict[str, Any]


def read_trace(folder: str | Path) -> SavedTrace:
    """Read back what :meth:`Tracer.save` wrote (to re-summarise with :func:`summarize`, no GPU needed)."""
    import json

    import pandas as pd

    folder = Path(folder)
    samples = pd.read_csv(folder / "samples.csv.gz")
    meta = json.loads((folder / "windows.json").read_text())
    windows = {w["name"]: WindowSummary.from_dict(w) for w in meta.pop("windows")}
    return SavedTrace(samples, windows, meta)

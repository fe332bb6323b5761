"""The energy tracer: GPU (or CPU) power sampled on a thread, summarised over named windows.

Public API (see docs/measurement.md for how each source measures and its caveats)::

    Tracer(gpus=None, source="auto", interval_s=0.1, idle_baseline_s=0.0, sync_cuda=True,
           smi_timeout_s=2.0, *, power_field="average", avg_window_s=1.0, tail_s=0.0, verbose=False)
        .start() / .stop() / with Tracer(...) as t:
        .window(name) (context manager) / .begin_window(name) / .end_window(name) -> WindowSummary
        .windows: dict[str, WindowSummary]; .samples() -> DataFrame; .save(folder); .source_name
    trace(name="trace", **tracer_kwargs)          # a started tracer with one window
    GPUTracer(mode, gpu_num=None, sampling_rate=0.1, verbose=False)  # the paper's decorator
    available_sources() -> {source: "ok" | reason}
    visible_gpus() -> [{ordinal, physical, name, uuid}]  # CUDA_VISIBLE_DEVICES applied, through NVML
    parse_smi_xml(xml_text) -> list[dict]         # nvidia-smi -q -x, every driver layout
    read_trace(folder) / summarize(samples, ...)  # replay a saved trace without a GPU

Sources: ``counter`` (NVML energy counter at window edges; the ground truth), ``nvml`` (NVML power
fields), ``smi`` (the paper's ``nvidia-smi -q -x``), ``cpu`` (RAPL, else an estimate from CPU time,
flagged ``estimated``). ``auto`` picks the first that works in that order.
"""
from .base import SAMPLE_COLUMNS, Source, SourceError, TracerWarning
from .core import LiveWindow, SavedTrace, Tracer, read_trace, trace
from .cpu import CPU_W_PER_CORE, CpuSource
from .decorator import MODES, GPUTracer
from .nvml import DeviceError, NvmlDevices, NvmlSource
from .smi import SmiSource, SubprocessRunner, parse_smi_xml
from .sources import SOURCES, available_sources, open_source, visible_gpus
from .summary import ENERGY_SOURCES, WindowSummary, summarize, trapezoid_energy_j

__all__ = [
    "CPU_W_PER_CORE", "ENERGY_SOURCES", "MODES", "SAMPLE_COLUMNS", "SOURCES",
    "CpuSource", "DeviceError", "GPUTracer", "LiveWindow", "NvmlDevices", "NvmlSource", "SavedTrace",
    "SmiSource", "Source", "SourceError", "SubprocessRunner", "Tracer", "TracerWarning", "WindowSummary",
    "available_sources", "open_source", "parse_smi_xml", "read_trace", "summarize", "trace",
    "trapezoid_energy_j", "visible_gpus",
]

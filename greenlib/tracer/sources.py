"""Choosing and opening a source: the registry, ``auto``, and :func:`available_sources`.

``auto`` takes the best source that works here: ``counter`` (NVML with an energy counter on every
traced GPU), else ``nvml``, else ``smi`` (if ``nvidia-smi -q -x`` runs), else ``cpu``, with a
:class:`TracerWarning` (once per process) naming why each GPU source failed: GPU work traced by the
CPU source is not measured. ``source="cpu"`` traces the CPU without the warning.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

from . import gpus as _gpus
from .base import Source, SourceError, TracerWarning
from .cpu import RAPL_ROOT, CpuSource
from .nvml import DeviceError, NvmlDevices, NvmlSource
from .smi import SMI_COMMAND, Runner, SmiSource, SubprocessRunner, run_smi

SOURCES: tuple[str, ...] = ("auto", "counter", "nvml", "smi", "cpu")

_warned_auto_cpu = False  # the auto -> cpu fallback is warned once per process


def _warn_auto_cpu(src: CpuSource, reasons: dict[str, str]) -> None:
    """Say, once per process and loudly, that ``auto`` found no GPU source and traces the CPU."""
    global _warned_auto_cpu
    if _warned_auto_cpu:
        return
    _warned_auto_cpu = True
    what = src.estimate_note if src.estimated else "the CPU package's RAPL counter"
    why = "; ".join(f"{k}: {v}" for k, v in reasons.items())
    warnings.warn(f"TRACER FALLBACK: source='auto' found no GPU source ({why}) and traces the CPU: energy is "
                  f"{what}. Work on a GPU is NOT measured (a GPU host with a broken NVML or nvidia-smi would "
                  "report CPU time as its energy). Pass source='cpu' to trace the CPU on purpose (no warning), "
                  "or fix the GPU source. Warned once per process.", TracerWarning, stacklevel=4)


def _open_nvml(devices: NvmlDevices, gpus: list[int] | None, env: dict) -> tuple[list[int], list[int]]:
    """Initialise NVML and map ``gpus`` to physical indices. Raises DeviceError / ValueError."""
    devices.init()
    try:
        n = devices.count()
        uuids = [devices.uuid(i) for i in range(n)]
        env_value = env.get("CUDA_VISIBLE_DEVICES")
        visible = _gpus.visible_physical(env_value, uuids, devices.mig_parent_index)
        labels, physical = _gpus.select(gpus, visible, env_value)
        if gpus is None and not labels:
            raise DeviceError(f"no GPU visible (NVML sees {n}; CUDA_VISIBLE_DEVICES={env_value!r})")
        _gpus.warn_if_order_ambiguous([devices.name(p) for p in visible], env.get("CUDA_DEVICE_ORDER"), env_value)
    except BaseException:
        devices.shutdown()
        raise
    return labels, physical


def _counter_problem(devices: NvmlDevices, physical: list[int]) -> str | None:
    for p in physical:
        try:
            devices.total_energy_j(p)
        except DeviceError as e:
            return f"physical GPU {p} has no energy counter ({e})"
    return None


def _smi_select(probe: list[dict], gpus: list[int] | None, env: dict) -> tuple[list[int], list[int], list[int]]:
    """(visible, labels, physical): ``gpus`` mapped onto nvidia-smi's GPUs through ``CUDA_VISIBLE_DEVICES``."""
    env_value = env.get("CUDA_VISIBLE_DEVICES")
    visible = _gpus.visible_physical(env_value, [g["uuid"] or "" for g in probe])
    return (visible, *_gpus.select(gpus, visible, env_value))


def _smi_none_visible(probe: list[dict], env: dict) -> str:
    return f"no GPU visible (nvidia-smi lists {len(probe)}; CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r})"


def _open_smi(runner: Runner, timeout_s: float, gpus: list[int] | None, env: dict, required: bool,
              warn_once: Callable[[str], None]) -> SmiSource | None:
    """Probe nvidia-smi and map ``gpus``. When it fails: None, or (``required``) a source whose
    samples will all be missing, after one warning."""
    try:
        probe = run_smi(runner, timeout_s)
        if not probe:
            raise SourceError("nvidia-smi lists no GPU")
    except SourceError as e:
        if not required:
            return None
        labels = gpus if gpus is not None else [0]
        warn_once(f"source 'smi': {e}; GPU(s) {labels} cannot be checked and every sample will be "
                  "recorded as missing")
        return SmiSource(labels, labels, runner, timeout_s, power_is_average=False, probe=None)
    visible, labels, physical = _smi_select(probe, gpus, env)
    if not labels:
        if required:
            raise ValueError(f"source 'smi': {_smi_none_visible(probe, env)}")
        return None
    _gpus.warn_if_order_ambiguous([probe[p]["name"] or "" for p in visible], env.get("CUDA_DEVICE_ORDER"),
                                  env.get("CUDA_VISIBLE_DEVICES"))
    is_average = probe[physical[0]]["power_w_field"] == "average"
    return SmiSource(labels, physical, runner, timeout_s, power_is_average=is_average, probe=probe)


def open_source(source: str | Source, gpus: Sequence[int] | None, *, power_field: str = "average",
                smi_timeout_s: float = 2.0, nvml: NvmlDevices | None = None, smi_runner: Runner | None = None,
                rapl_root: str | Path = RAPL_ROOT, env: dict | None = None,
                warn_once: Callable[[str], None] = lambda msg: None) -> Source:
    """Open ``source`` on ``gpus`` (CUDA ordinals; None = every visible GPU, or the CPU when none).

    Raises ValueError, before anything runs, for an unknown source, a GPU that is not present, or
    a named source that cannot work here (``nvml``/``counter`` without NVML, ``counter`` without
    an energy counter, ``cpu`` with ``gpus``). A named ``smi`` whose probe fails still opens: its
    samples are recorded as missing after one warning (the traced work must run regardless).
    """
    gpus = _gpus.check_gpus_arg(gpus)
    if isinstance(source, Source):
        if gpus is not None and list(gpus) != list(source.labels):
            raise ValueError(f"gpus={gpus} but the given source traces {source.labels}; pass gpus=None")
        return source
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; accepted: {', '.join(SOURCES)}")
    env = dict(os.environ) if env is None else env
    reasons: dict[str, str] = {}

    if source in ("auto", "counter", "nvml"):
        devices = nvml if nvml is not None else NvmlDevices()
        try:
            labels, physical = _open_nvml(devices, gpus, env)
        except DeviceError as e:
            if source != "auto":
                raise ValueError(f"source {source!r} is unavailable: {e}; accepted here: "
                                 f"{_accepted(nvml, smi_runner, smi_timeout_s, rapl_root)}") from None
            reasons["nvml"] = str(e)
        else:
            problem = _counter_problem(devices, physical) if source != "nvml" else "not asked for"
            if source == "counter" and problem:
                devices.shutdown()
                raise ValueError(f"source 'counter' is unavailable: {problem}; accepted here: nvml, smi, cpu")
            try:
                return NvmlSource(devices, labels, physical, power_field=power_field, use_counter=problem is None)
            except BaseException:
                devices.shutdown()
                raise

    if source in ("auto", "smi"):
        runner = smi_runner if smi_runner is not None else SubprocessRunner()
        src = _open_smi(runner, smi_timeout_s, gpus, env, required=source == "smi", warn_once=warn_once)
        if src is not None:
            return src
        reasons["smi"] = "nvidia-smi did not answer or lists no visible GPU"

    # cpu: what remains
    if gpus is not None:
        why = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        accepted = "none; pass gpus=None to trace the CPU"
        raise ValueError(f"GPU {gpus[0]} is not present: no GPU source works here"
                         + (f" ({why})" if why else " (source 'cpu' traces the CPU)")
                         + f"; accepted GPUs: {accepted}")
    src = CpuSource(rapl_root)
    if source == "auto":
        _warn_auto_cpu(src, reasons)
    return src


def _accepted(nvml, smi_runner, smi_timeout_s, rapl_root) -> str:
    ok = [k for k, v in available_sources(nvml=nvml, smi_runner=smi_runner, smi_timeout_s=smi_timeout_s,
                                          rapl_root=rapl_root).items() if v == "ok"]
    return ", ".join(ok) or "none"


def visible_gpus(*, nvml: NvmlDevices | None = None, env: dict | None = None) -> list[dict]:
    """The GPUs this process sees, in CUDA ordinal order, read through NVML (no CUDA context made).

    One dict per GPU: ``ordinal`` (CUDA), ``physical`` (NVML index), ``name``, ``uuid``. Empty when
    NVML does not work here (no GPU, no driver). ``CUDA_VISIBLE_DEVICES`` is applied as
    :func:`greenlib.tracer.gpus.visible_physical` reads it (ValueError for an ambiguous entry).
    """
    env = dict(os.environ) if env is None else env
    devices = nvml if nvml is not None else NvmlDevices()
    try:
        devices.init()
    except DeviceError:
        return []
    try:
        n = devices.count()
        uuids = [devices.uuid(i) for i in range(n)]
        visible = _gpus.visible_physical(env.get("CUDA_VISIBLE_DEVICES"), uuids, devices.mig_parent_index)
        return [{"ordinal": k, "physical": p, "name": devices.name(p), "uuid": uuids[p]} for k, p in enumerate(visible)]
    except DeviceError:
        return []
    finally:
        devices.shutdown()


def available_sources(*, nvml: NvmlDevices | None = None, smi_runner: Runner | None = None,
                      smi_timeout_s: float = 2.0, rapl_root: str | Path = RAPL_ROOT,
                      env: dict | None = None) -> dict[str, str]:
    """``{source: "ok" or the reason it is unavailable}`` for counter, nvml, smi and cpu.

    Applies ``CUDA_VISIBLE_DEVICES`` as ``open_source(source, None)`` does: "ok" means that
    ``Tracer(source=...)`` opens here, on every visible GPU.
    """
    env = dict(os.environ) if env is None else env
    out: dict[str, str] = {}
    devices = nvml if nvml is not None else NvmlDevices()
    try:
        _labels, physical = _open_nvml(devices, None, env)
    except (DeviceError, ValueError) as e:  # ValueError: a CUDA_VISIBLE_DEVICES that names no GPU here
        out["counter"] = out["nvml"] = str(e)
    else:
        try:
            out["nvml"] = "ok"
            out["counter"] = _counter_problem(devices, physical) or "ok"
        finally:
            devices.shutdown()
    runner = smi_runner if smi_runner is not None else SubprocessRunner()
    try:
        probe = run_smi(runner, smi_timeout_s, SMI_COMMAND)
        if not probe:
            out["smi"] = "nvidia-smi lists no GPU"
        else:
            out["smi"] = "ok" if _smi_select(probe, None, env)[1] else _smi_none_visible(probe, env)
    except (SourceError, ValueError) as e:
        out["smi"] = str(e)
    out["cpu"] = "ok"
    return out


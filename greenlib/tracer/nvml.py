"""NVML sources: ``nvml`` (power fields sampled in-process) and ``counter`` (the energy counter).

:class:`NvmlDevices` is the only code in greenlib that calls nvidia-ml-py (``pynvml``); tests mock
it with ``unittest.mock.create_autospec(NvmlDevices, instance=True)``.

What the fields mean on an H100 with driver 580 (measured; see docs/measurement.md):

- ``nvmlDeviceGetPowerUsage`` and the field ``NVML_FI_DEV_POWER_AVERAGE`` are a one-second
  *average*: accurate within ~1.5% on steady and bursty loads, but ~0.5 s late.
- ``NVML_FI_DEV_POWER_INSTANT`` is instantaneous: sampled every 0.5-1 s on a bursty load it erred
  +5% to +24% (aliasing).
- ``nvmlDeviceGetTotalEnergyConsumption`` (mJ, Volta and newer) advances about ten times a second:
  the ground truth, read at window edges. One read costs far more CPU than a power read (measured
  on that H100: a sampler reading it every 0.1 s used 3.8-4.9% of a core, without it 0.5%), so the
  sampled series carries it at most every ``COUNTER_SERIES_EVERY_S``; window edges always read it.
"""
from __future__ import annotations

import time
from typing import Any

from .base import NAN, NVIDIA_UTIL_PERIOD_S, Source, SourceError

POWER_FIELDS: tuple[str, ...] = ("average", "instant")  # what may feed power_w
COUNTER_SERIES_EVERY_S = 1.0  # the counter column of the sample series is filled this often (s)


class DeviceError(SourceError):
    """NVML refused a call (library missing, not initialised, device lost, not supported)."""


class NvmlDevices:
    """Thin layer over pynvml addressed by *physical* (NVML) index, in SI-ish units.

    Optional readings a device does not support come back as NaN; a failure that means the device
    cannot be read at all raises DeviceError.
    """

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: dict[int, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def init(self) -> None:
        """Load and initialise NVML. Raises DeviceError with the reason when it cannot."""
        try:
            import pynvml
        except ImportError as e:
            raise DeviceError(f"nvidia-ml-py is not installed ({e})") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise DeviceError(f"NVML did not initialise: {e}") from None
        self._nvml = pynvml

    def shutdown(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass  # NVML already shut down elsewhere; nothing to release
            self._nvml, self._handles = None, {}

    # -- inventory ---------------------------------------------------------------------------
    def count(self) -> int:
        return int(self._call("nvmlDeviceGetCount"))

    def driver_version(self) -> str:
        return _str(self._call("nvmlSystemGetDriverVersion"))

    def name(self, index: int) -> str:
        return _str(self._call("nvmlDeviceGetName", self._handle(index)))

    def uuid(self, index: int) -> str:
        return _str(self._call("nvmlDeviceGetUUID", self._handle(index)))

    def mig_parent_index(self, mig_uuid: str) -> int:
        """Physical index of the GPU a MIG instance (``MIG-...`` UUID) belongs to."""
        mig = self._call("nvmlDeviceGetHandleByUUID", mig_uuid)
        parent = self._call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", mig)
        return int(self._call("nvmlDeviceGetIndex", parent))

    # -- readings ----------------------------------------------------------------------------
    def power_usage_w(self, index: int) -> float:
        """``nvmlDeviceGetPowerUsage`` in W (a 1 s average on Ampere+ except GA100); NaN if unsupported."""
        return self._optional(lambda h: self._nvml.nvmlDeviceGetPowerUsage(h) / 1000.0, index, strict=True)

    def power_fields_w(self, index: int) -> tuple[float, float]:
        """``(average, instant)`` board power in W from ``nvmlDeviceGetFieldValues``; NaN where unsupported."""
        n = self._nvml
        try:
            values = n.nvmlDeviceGetFieldValues(self._handle(index),
                                                [n.NVML_FI_DEV_POWER_AVERAGE, n.NVML_FI_DEV_POWER_INSTANT])
        except n.NVMLError as e:
            if _unsupported(n, e):
                return NAN, NAN
            raise DeviceError(f"GPU {index}: power fields: {e}") from None
        return tuple(_field_value(n, v) / 1000.0 for v in values)  # mW -> W

    def total_energy_j(self, index: int) -> float:
        """Energy counter since the driver loaded, J. Raises DeviceError when unsupported (pre-Volta)."""
        try:
            return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle(index)) / 1000.0
        except self._nvml.NVMLError as e:
            raise DeviceError(f"GPU {index}: energy counter: {e}") from None

    def utilization_pct(self, index: int) -> tuple[float, float]:
        """``(gpu, memory)`` utilisation in %; NaN where NVML refuses."""
        u = self._optional(lambda h: self._nvml.nvmlDeviceGetUtilizationRates(h), index)
        return (NAN, NAN) if isinstance(u, float) else (float(u.gpu), float(u.memory))

    def memory_used_mib(self, index: int) -> float:
        return self._optional(lambda h: self._nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20, index)

    def sm_clock_mhz(self, index: int) -> float:
        return self._optional(lambda h: float(self._nvml.nvmlDeviceGetClockInfo(h, self._nvml.NVML_CLOCK_SM)), index)

    def temperature_c(self, index: int) -> float:
        return self._optional(
            lambda h: float(self._nvml.nvmlDeviceGetTemperature(h, self._nvml.NVML_TEMPERATURE_GPU)), index)

    # -- plumbing ----------------------------------------------------------------------------
    def _call(self, fn: str, *args: Any) -> Any:
        if self._nvml is None:
            raise DeviceError("NVML is not initialised (call init() first)")
        try:
            return getattr(self._nvml, fn)(*args)
        except self._nvml.NVMLError as e:
            raise DeviceError(f"{fn}: {e}") from None

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = self._call("nvmlDeviceGetHandleByIndex", index)
        return self._handles[index]

    def _optional(self, read, index: int, strict: bool = False):
        """``read(handle)``, or NaN when NVML refuses. ``strict``: only 'not supported' is NaN."""
        h = self._handle(index)
        try:
            return read(h)
        except self._nvml.NVMLError as e:
            if strict and not _unsupported(self._nvml, e):
                raise DeviceError(f"GPU {index}: {e}") from None
            return NAN


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _unsupported(n: Any, e: Exception) -> bool:
    codes = {getattr(n, "NVML_ERROR_NOT_SUPPORTED", 3), getattr(n, "NVML_ERROR_FUNCTION_NOT_FOUND", 13)}
    return getattr(e, "value", None) in codes


def _field_value(n: Any, v: Any) -> float:
    """The number in one ``c_nvmlFieldValue_t``, NaN if NVML returned an error for it."""
    if v.nvmlReturn != 0:
        return NAN
    member = {
        n.NVML_VALUE_TYPE_DOUBLE: "dVal", n.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        n.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal", n.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        n.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal", n.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
        getattr(n, "NVML_VALUE_TYPE_UNSIGNED_SHORT", 6): "usVal",
    }.get(v.valueType, "uiVal")
    return float(getattr(v.value, member))


class NvmlSource(Source):
    """Samples NVML in-process; with ``use_counter`` it is the ``counter`` source.

    ``power_field`` chooses what feeds ``power_w``: ``"average"`` (default; the 1 s average, from
    ``NVML_FI_DEV_POWER_AVERAGE`` or, where that field is unsupported, ``nvmlDeviceGetPowerUsage``)
    or ``"instant"`` (``NVML_FI_DEV_POWER_INSTANT``). Both are always recorded.
    """

    sampled_label = "nvml"
    util_period_s = NVIDIA_UTIL_PERIOD_S

    def __init__(self, devices: NvmlDevices, labels: list[int], physical: list[int],
                 power_field: str = "average", use_counter: bool = False):
        if power_field not in POWER_FIELDS:
            raise ValueError(f"power_field={power_field!r}; accepted: {', '.join(POWER_FIELDS)}")
        self.devices, self.labels, self.physical = devices, list(labels), list(physical)
        self.power_field = power_field
        self.power_is_average = power_field == "average"
        self.name = "counter" if use_counter else "nvml"
        self.counter_label = "counter" if use_counter else None
        self.max_read_s = 0.1
        self._counter_read_at = -float("inf")

    def read(self) -> list[dict[str, float]]:
        d, out = self.devices, []
        now = time.monotonic()
        series_counter = self.has_counter and now - self._counter_read_at >= COUNTER_SERIES_EVERY_S
        if series_counter:
            self._counter_read_at = now
        for p in self.physical:
            average, instant = d.power_fields_w(p)
            if average != average:  # field unsupported (GA100 and older): the legacy call
                average = d.power_usage_w(p)
            gpu_util, mem_util = d.utilization_pct(p)
            counter = NAN
            if series_counter:
                try:
                    counter = d.total_energy_j(p)
                except DeviceError:
                    counter = NAN  # the window-edge read reports the failure; the series keeps a gap
            out.append({
                "power_w": average if self.power_is_average else instant,
                "power_instant_w": instant, "power_average_w": average,
                "gpu_util_pct": gpu_util, "mem_util_pct": mem_util,
                "mem_used_mib": d.memory_used_mib(p), "sm_clock_mhz": d.sm_clock_mhz(p),
                "temp_c": d.temperature_c(p), "energy_counter_j": counter,
            })
        return out

    def read_counter_j(self) -> dict[int, float]:
        if not self.has_counter:
            return super().read_counter_j()
        return {label: self.devices.total_energy_j(p) for label, p in zip(self.labels, self.physical)}

    def close(self) -> None:
        self.devices.shutdown()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"source": self.name, "power_field": self.power_field,
                                "power_is_average": self.power_is_average}
        try:
            info["driver"] = self.devices.driver_version()
            info["gpu_names"] = [self.devices.name(p) for p in self.physical]
        except DeviceError as e:
            info["describe_error"] = str(e)
        return info

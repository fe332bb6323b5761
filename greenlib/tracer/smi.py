"""The paper's source: ``nvidia-smi -q -x`` in a subprocess, parsed with xmltodict.

Drivers have used three layouts for board power (all read here):

- ``power_readings/power_draw`` (driver 510-515, e.g. Tesla P100 and T4),
- ``gpu_power_readings/power_draw`` (driver 535, e.g. A100),
- ``gpu_power_readings/average_power_draw`` + ``instant_power_draw`` (driver 580+, schema v13).

On driver 580 ``power.draw`` *is* ``average_power_draw``, a one-second average. ``power_w`` is the
average where the driver reports one, else the legacy ``power_draw``, else the instantaneous
figure; ``power_w_field`` says which.

One call takes 0.09-0.15 s on an H100, so a subprocess per sample cannot hold a 0.1 s interval:
the tracer schedules samples on a fixed-rate clock and reports the interval it achieved.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from typing import Any, Callable, Sequence

from .base import NAN, NVIDIA_UTIL_PERIOD_S, Source, SourceError, as_float

SMI_COMMAND: tuple[str, ...] = ("nvidia-smi", "-q", "-x")

# A runner takes (argv, timeout_s) and returns stdout as text, raising SourceError on failure.
Runner = Callable[[Sequence[str], float], str]

_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


def _number(text: Any) -> float:
    """``"123.06 W"`` -> 123.06; ``"N/A"``, ``"[Not Supported]"``, None, a sub-element -> NaN."""
    if not isinstance(text, str):
        return NAN
    m = _NUMBER.match(text)
    return as_float(m.group(1)) if m else NAN


def _get(node: Any, *path: str) -> Any:
    """``node[path[0]][path[1]]...`` or None where any step is missing or not a mapping."""
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _text(node: Any) -> str | None:
    if isinstance(node, str):
        return node.strip() or None
    if isinstance(node, dict) and isinstance(node.get("#text"), str):
        return node["#text"].strip() or None
    return None


def _gpu_record(gpu: dict) -> dict[str, Any]:
    gpr = _get(gpu, "gpu_power_readings")
    legacy = _get(gpu, "power_readings")
    average = _number(_get(gpr, "average_power_draw"))
    instant = _number(_get(gpr, "instant_power_draw"))
    draw = _number(_get(gpr, "power_draw"))
    if draw != draw:  # NaN: fall back to the pre-535 layout
        draw = _number(_get(legacy, "power_draw"))
    power_w, field = NAN, None
    for value, name in ((average, "average"), (draw, "power_draw"), (instant, "instant")):
        if value == value:
            power_w, field = value, name
            break
    minor = _number(_get(gpu, "minor_number"))
    return {
        "name": _text(_get(gpu, "product_name")),
        "uuid": _text(_get(gpu, "uuid")),
        "pci_bus_id": _text(_get(gpu, "pci", "pci_bus_id")) or _text(_get(gpu, "@id")),
        "minor_number": int(minor) if minor == minor else None,
        "power_w": power_w,
        "power_w_field": field,
        "power_average_w": average,
        "power_instant_w": instant,
        "power_draw_w": draw,
        "gpu_util_pct": _number(_get(gpu, "utilization", "gpu_util")),
        "mem_util_pct": _number(_get(gpu, "utilization", "memory_util")),
        "mem_used_mib": _number(_get(gpu, "fb_memory_usage", "used")),
        "sm_clock_mhz": _number(_get(gpu, "clocks", "sm_clock")),
        "temp_c": _number(_get(gpu, "temperature", "gpu_temp")),
    }


def parse_smi_xml(xml_text: str) -> list[dict[str, Any]]:
    """Parse ``nvidia-smi -q -x`` output into one record per ``<gpu>``, in file order.

    Each record has ``name``, ``uuid``, ``pci_bus_id``, ``minor_number``, ``power_w`` (W; the
    driver's average where reported, else the legacy ``power_draw``, else the instantaneous
    figure), ``power_w_field`` (``"average"``, ``"power_draw"``, ``"instant"`` or None),
    ``power_average_w``, ``power_instant_w``, ``power_draw_w``, ``gpu_util_pct``,
    ``mem_util_pct``, ``mem_used_mib``, ``sm_clock_mhz``, ``temp_c``. Whatever the driver reports
    as ``N/A`` (or omits) is NaN, never 0.

    ``xml_text`` may be bytes (the subprocess's raw stdout), decoded as UTF-8. Raises TypeError for
    anything but str or bytes, ValueError when the text is empty or not an nvidia-smi XML log.
    """
    import xmltodict  # imported here so the tracer imports without it (only smi needs it)

    if isinstance(xml_text, (bytes, bytearray)):
        xml_text = bytes(xml_text).decode("utf-8", "replace")
    if not isinstance(xml_text, str):
        raise TypeError(f"parse_smi_xml takes the output of `nvidia-smi -q -x` as str or bytes, "
                        f"not {type(xml_text).__name__}")
    if not xml_text.strip():
        raise ValueError("nvidia-smi printed nothing; expected the XML of `nvidia-smi -q -x`")
    try:
        doc = xmltodict.parse(xml_text)
    except Exception as e:  # expat raises its own ExpatError; callers only need ValueError
        head = xml_text.strip()[:60]
        raise ValueError(f"nvidia-smi output is not XML ({e}); it starts {head!r}") from None
    log = doc.get("nvidia_smi_log") if isinstance(doc, dict) else None
    if not isinstance(log, dict):
        root = next(iter(doc), None) if isinstance(doc, dict) else None
        raise ValueError(f"XML root is {root!r}; expected 'nvidia_smi_log' (output of `nvidia-smi -q -x`)")
    gpus = log.get("gpu")
    if gpus is None:
        return []
    if isinstance(gpus, dict):  # xmltodict gives a dict for one <gpu>, a list for several
        gpus = [gpus]
    if not isinstance(gpus, list) or not all(isinstance(g, dict) for g in gpus):
        raise ValueError("nvidia-smi XML has a <gpu> element without content")
    return [_gpu_record(g) for g in gpus]


class SubprocessRunner:
    """Runs a command with a timeout; on timeout or :meth:`cancel` kills its whole process group.

    The child gets its own session so a wrapper script's children die with it, and it is always
    reaped: no process is left behind.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def __call__(self, argv: Sequence[str], timeout_s: float) -> str:
        argv = list(argv)
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except FileNotFoundError:
            raise SourceError(f"{argv[0]} not found (is the NVIDIA driver installed and on PATH?)") from None
        except OSError as e:
            raise SourceError(f"could not run {argv[0]}: {e}") from None
        with self._lock:
            self._proc = proc
        try:
            try:
                out, err = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                proc.communicate()  # reap it
                raise SourceError(f"`{' '.join(argv)}` timed out after {timeout_s:g} s (killed)") from None
        finally:
            with self._lock:
                self._proc = None
            if proc.poll() is None:  # an unexpected exception above: never leave it running
                self._kill(proc)
                proc.wait()
        if proc.returncode != 0:
            msg = err.decode("utf-8", "replace").strip().splitlines()
            raise SourceError(f"`{' '.join(argv)}` exited with status {proc.returncode}"
                              + (f": {msg[0][:200]}" if msg else ""))
        return out.decode("utf-8", "replace")

    def cancel(self) -> None:
        """Kill the command in flight, if any (safe to call from another thread)."""
        with self._lock:
            proc = self._proc
        if proc is not None:
            self._kill(proc)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # already gone


def run_smi(runner: Runner, timeout_s: float, command: Sequence[str] = SMI_COMMAND) -> list[dict[str, Any]]:
    """Run nvidia-smi once and parse it. Raises SourceError (not found, timeout, garbage)."""
    text = runner(command, timeout_s)
    try:
        return parse_smi_xml(text)
    except ValueError as e:
        raise SourceError(str(e)) from None
    except ImportError as e:
        raise SourceError(f"xmltodict is not installed ({e}); the smi source parses with it") from None


class SmiSource(Source):
    """Samples ``nvidia-smi -q -x`` (every GPU; the traced ones are kept)."""

    name = "smi"
    sampled_label = "smi"
    util_period_s = NVIDIA_UTIL_PERIOD_S

    def __init__(self, labels: list[int], physical: list[int], runner: Runner, timeout_s: float,
                 power_is_average: bool, probe: list[dict[str, Any]] | None = None,
                 command: Sequence[str] = SMI_COMMAND):
        self.labels, self.physical = list(labels), list(physical)
        self.runner, self.timeout_s, self.command = runner, timeout_s, tuple(command)
        self.power_is_average = power_is_average
        self.max_read_s = timeout_s
        self._probe = probe

    def read(self) -> list[dict[str, float]]:
        gpus = run_smi(self.runner, self.timeout_s, self.command)
        out = []
        for p in self.physical:
            if p >= len(gpus):
                raise SourceError(f"nvidia-smi lists {len(gpus)} GPU(s); GPU {p} is gone")
            g = gpus[p]
            out.append({k: g[k] for k in ("power_w", "power_instant_w", "power_average_w", "gpu_util_pct",
                                          "mem_util_pct", "mem_used_mib", "sm_clock_mhz", "temp_c")}
                       | {"energy_counter_j": NAN})
        return out

    def cancel(self) -> None:
        cancel = getattr(self.runner, "cancel", None)
        if callable(cancel):
            cancel()

    def describe(self) -> dict[str, Any]:
        names = [self._probe[p]["name"] if self._probe and p < len(self._probe) else None for p in self.physical]
        fields = [self._probe[p]["power_w_field"] if self._probe and p < len(self._probe) else None
                  for p in self.physical]
        return {"source": self.name, "command": " ".join(self.command), "gpu_names": names,
                "power_w_field": fields, "power_is_average": self.power_is_average}

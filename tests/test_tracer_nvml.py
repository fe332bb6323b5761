"""NVML and counter sources, auto selection and CUDA_VISIBLE_DEVICES, with the device layer mocked."""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from unittest import mock

import pytest

from greenlib.tracer import DeviceError, NvmlDevices, Tracer, TracerWarning, available_sources
from greenlib.tracer.base import NVIDIA_UTIL_PERIOD_S, SourceError

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"
UUIDS = ["GPU-aaaa0000-0000", "GPU-bbbb1111-1111", "GPU-aaab2222-2222", "GPU-cccc3333-3333"]


def fake_nvml(count=4, counter=True, avg_w=300.0, inst_w=310.0, init_error=None, names=None):
    """An autospec'd device layer: physical GPU i draws avg_w + i W; its counter integrates that."""
    dev = mock.create_autospec(NvmlDevices, instance=True)
    if init_error:
        dev.init.side_effect = DeviceError(init_error)
    dev.count.return_value = count
    dev.uuid.side_effect = lambda i: UUIDS[i]
    dev.name.side_effect = lambda i: (names or ["NVIDIA H100 80GB HBM3"] * count)[i]
    dev.driver_version.return_value = "580.159.04"
    dev.power_fields_w.side_effect = lambda i: (avg_w + i, inst_w + i)
    dev.power_usage_w.side_effect = lambda i: avg_w + i
    dev.utilization_pct.return_value = (97.0, 31.0)
    dev.memory_used_mib.return_value = 1234.0
    dev.sm_clock_mhz.return_value = 1980.0
    dev.temperature_c.return_value = 55.0
    t0 = time.perf_counter()
    if counter:
        dev.total_energy_j.side_effect = lambda i: 1e6 * (i + 1) + (avg_w + i) * (time.perf_counter() - t0)
    else:
        dev.total_energy_j.side_effect = DeviceError("energy counter: Not Supported")
    dev.mig_parent_index.side_effect = lambda u: {"MIG-9f1c": 2}[u]
    return dev


def no_smi(argv, timeout_s):
    raise SourceError("nvidia-smi not found")


def smi_fixture(name):
    text = (FIXTURES / name).read_text()
    return lambda argv, timeout_s: text


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)


# -- source selection ------------------------------------------------------------------------------

def test_auto_prefers_the_counter():
    dev = fake_nvml()
    with Tracer(gpus=(0,), nvml=dev, smi_runner=no_smi, interval_s=0.01) as t:
        with t.window("w"):
            time.sleep(0.35)  # longer than the utilisation lag (0.2 s), so the means have samples
    w = t.windows["w"]
    assert t.source_name == "counter" and w.energy_source == "counter"
    assert w.util_lag_s == NVIDIA_UTIL_PERIOD_S == 0.2
    assert w.counter_energy_j == w.energy_j == pytest.approx(300.0 * w.elapsed_s, rel=0.02)
    assert w.sampled_energy_j == pytest.approx(300.0 * w.elapsed_s, rel=1e-6)
    assert w.mean_gpu_util_pct == 97.0 and w.mean_mem_util_pct == 31.0 and w.max_mem_used_mib == 1234.0
    df = t.samples()
    assert (df["power_average_w"] == 300.0).all() and (df["power_instant_w"] == 310.0).all()
    assert (df["power_w"] == 300.0).all()  # the average feeds power_w by default
    counter = df["energy_counter_j"].dropna()
    assert counter.is_monotonic_increasing
    # the series reads the costly counter at most every COUNTER_SERIES_EVERY_S (1 s): once here
    assert len(counter) == 1 and len(df) > 5
    dev.shutdown.assert_called()


def test_auto_without_counter_is_nvml():
    dev = fake_nvml(counter=False)
    with Tracer(nvml=dev, smi_runner=no_smi, interval_s=0.01) as t:
        with t.window("w"):
            time.sleep(0.05)
    w = t.windows["w"]
    assert t.source_name == "nvml" and w.energy_source == "nvml" and math.isnan(w.counter_energy_j)
    assert t.gpus == [0, 1, 2, 3]
    assert w.energy_j == pytest.approx(sum(300.0 + i for i in range(4)) * w.elapsed_s)


@pytest.mark.filterwarnings("ignore:TRACER FALLBACK")  # the subject of the next test
def test_auto_without_nvml_is_smi_then_cpu(tmp_path):
    dev = fake_nvml(init_error="NVML Shared Library Not Found")
    with Tracer(nvml=dev, smi_runner=smi_fixture("h100-sxm-driver580-idle.xml"), interval_s=0.01) as t:
        pass
    assert t.source_name == "smi"
    with Tracer(nvml=fake_nvml(init_error="no NVML"), smi_runner=no_smi, rapl_root=tmp_path) as t:
        pass
    assert t.source_name == "cpu" and t.gpus == [-1]


def test_auto_falling_back_to_the_cpu_warns_once_loudly(tmp_path, monkeypatch):
    from greenlib.tracer import sources

    monkeypatch.setattr(sources, "_warned_auto_cpu", False)
    broken = dict(nvml=fake_nvml(init_error="NVML: Driver/library version mismatch"), smi_runner=no_smi,
                  rapl_root=tmp_path)
    with pytest.warns(TracerWarning) as got:
        Tracer(**broken).close()
    msg = str(got[0].message)
    assert "TRACER FALLBACK" in msg and "Driver/library version mismatch" in msg and "NOT measured" in msg
    assert "CPU time" in msg and "source='cpu'" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: the second fallback and a named cpu are quiet
        Tracer(**{**broken, "nvml": fake_nvml(init_error="again")}).close()
        monkeypatch.setattr(sources, "_warned_auto_cpu", False)
        Tracer(source="cpu", rapl_root=tmp_path).close()


def test_auto_with_gpus_on_a_machine_without_gpu():
    with pytest.raises(ValueError, match=r"GPU 0 is not present.*nvml: no NVML.*accepted GPUs: none"):
        Tracer(gpus=(0,), nvml=fake_nvml(init_error="no NVML"), smi_runner=no_smi)


def test_named_sources_that_cannot_work_raise():
    with pytest.raises(ValueError, match=r"source 'counter' is unavailable: physical GPU 0 has no energy counter"):
        Tracer(source="counter", nvml=fake_nvml(counter=False), smi_runner=no_smi)
    with pytest.raises(ValueError, match=r"source 'nvml' is unavailable: NVML did not.*accepted here: .*cpu"):
        Tracer(source="nvml", nvml=fake_nvml(init_error="NVML did not initialise"), smi_runner=no_smi)


def test_nvml_explicit_never_uses_counter():
    with Tracer(source="nvml", gpus=(1,), nvml=fake_nvml(), interval_s=0.01) as t:
        with t.window("w"):
            time.sleep(0.03)
    assert t.windows["w"].energy_source == "nvml" and math.isnan(t.windows["w"].counter_energy_j)
    assert t.windows["w"].energy_j == pytest.approx(301.0 * t.windows["w"].elapsed_s)


def test_instant_field_can_feed_power_w():
    with Tracer(source="nvml", gpus=(0,), nvml=fake_nvml(), interval_s=0.01, power_field="instant") as t:
        with t.window("w"):
            time.sleep(0.03)
    assert (t.samples()["power_w"] == 310.0).all() and t.lag_shift_s == 0.0
    assert t.windows["w"].energy_j == pytest.approx(310.0 * t.windows["w"].elapsed_s)


def test_average_field_unsupported_falls_back_to_power_usage():
    dev = fake_nvml()
    dev.power_fields_w.side_effect = lambda i: (float("nan"), 200.0)  # e.g. GA100: no average field
    dev.power_usage_w.side_effect = lambda i: 180.0
    with Tracer(source="nvml", gpus=(0,), nvml=dev, interval_s=0.01) as t:
        time.sleep(0.02)
    df = t.samples()
    assert (df["power_average_w"] == 180.0).all() and (df["power_instant_w"] == 200.0).all()


def test_device_lost_mid_run_records_missing_samples_once_warned():
    dev = fake_nvml()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Tracer(gpus=(0,), nvml=dev, interval_s=0.01) as t:
            dev.power_fields_w.side_effect = DeviceError("GPU is lost")
            with t.window("w"):
                time.sleep(0.1)
    w = t.windows["w"]
    assert sum(issubclass(c.category, TracerWarning) for c in caught) == 1
    assert w.energy_source == "counter" and w.energy_j > 0  # the counter still answers
    assert math.isnan(w.sampled_energy_j)


def test_counter_read_failing_at_window_edge_falls_back_to_samples():
    dev = fake_nvml()
    with Tracer(gpus=(0,), nvml=dev, interval_s=0.01) as t:
        dev.total_energy_j.side_effect = DeviceError("Unknown Error")
        with t.window("w"):
            time.sleep(0.05)
    w = t.windows["w"]
    assert w.energy_source == "nvml" and w.energy_j == pytest.approx(300.0 * w.elapsed_s)
    assert "energy counter failed" in w.reason and "Unknown Error" in w.reason


def test_available_sources_reports_reasons():
    got = available_sources(nvml=fake_nvml(counter=False), smi_runner=no_smi)
    assert got["nvml"] == "ok" and "no energy counter" in got["counter"]
    assert got["smi"] == "nvidia-smi not found" and got["cpu"] == "ok"
    got = available_sources(nvml=fake_nvml(init_error="NVML Shared Library Not Found"),
                            smi_runner=smi_fixture("nvidia-h200-x2-idle.xml"))
    assert got == {"counter": "NVML Shared Library Not Found", "nvml": "NVML Shared Library Not Found",
                   "smi": "ok", "cpu": "ok"}


@pytest.mark.filterwarnings("ignore:CUDA_VISIBLE_DEVICES='-1'")  # that warning: test_tracer_gpus
@pytest.mark.parametrize("env, ok", [("", False), ("-1", False), ("1", True), ("1,0", True)])
def test_available_sources_applies_cuda_visible_devices_as_the_tracer_does(monkeypatch, env, ok):
    """"ok" must mean that ``Tracer(source=...)`` opens: a benchmark script picks its sources from it."""
    got = available_sources(nvml=fake_nvml(), smi_runner=smi_fixture("nvidia-h200-x2-idle.xml"),
                            env={"CUDA_VISIBLE_DEVICES": env})
    assert got["cpu"] == "ok" and all((got[s] == "ok") == ok for s in ("counter", "nvml", "smi")), got
    if not ok:
        assert "no GPU visible" in got["nvml"] and f"CUDA_VISIBLE_DEVICES={env!r}" in got["smi"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    for source in ("counter", "nvml"):
        if ok:
            Tracer(source=source, nvml=fake_nvml(), smi_runner=no_smi)
        else:
            with pytest.raises(ValueError, match="no GPU visible"):
                Tracer(source=source, nvml=fake_nvml(), smi_runner=no_smi)


# -- CUDA_VISIBLE_DEVICES --------------------------------------------------------------------------

@pytest.mark.parametrize("env, gpus, physical", [
    (None, None, [0, 1, 2, 3]),
    (None, (2,), [2]),
    ("2,0", None, [2, 0]),
    ("2,0", (0,), [2]),
    ("2,0", (1,), [0]),
    ("3,1,2", (2, 0), [2, 3]),
    ("1, 3", None, [1, 3]),
    ("GPU-bbbb", None, [1]),
    ("GPU-cccc3333-3333,0", (1, 0), [0, 3]),
    ("gpu-aaab", None, [2]),
    ("MIG-9f1c", None, [2]),
])
def test_cuda_visible_devices_maps_ordinals_to_physical(monkeypatch, env, gpus, physical):
    if env is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    dev = fake_nvml()
    with Tracer(gpus=gpus, source="nvml", nvml=dev, interval_s=0.01) as t:
        time.sleep(0.01)
    assert t.physical_gpus == physical
    assert t.gpus == (list(gpus) if gpus is not None else list(range(len(physical))))
    read = {c.args[0] for c in dev.power_fields_w.call_args_list}
    assert read == set(physical)  # NVML is asked about the physical GPUs only
    # the series is labelled with the CUDA ordinals
    assert sorted(set(t.samples()["gpu"])) == sorted(t.gpus)


@pytest.mark.parametrize("env", ["0,7,1", "0,-1,2", "0,GPU-ffff,1"])
def test_cuda_visible_devices_stops_at_an_invalid_entry(monkeypatch, env):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    with pytest.warns(TracerWarning, match="ignored"):
        t = Tracer(source="nvml", nvml=fake_nvml())
    t.stop()
    assert t.physical_gpus == [0]


@pytest.mark.parametrize("env", ["", "-1"])
def test_cuda_visible_devices_hiding_every_gpu(monkeypatch, env, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TracerWarning)
        t = Tracer(nvml=fake_nvml(), smi_runner=no_smi, rapl_root=tmp_path)
        t.stop()
        assert t.source_name == "cpu"
        with pytest.raises(ValueError, match=r"GPU 0 is not present: this process sees 0 GPU\(s\) with "
                                             r"CUDA_VISIBLE_DEVICES=.*accepted CUDA ordinals: none"):
            Tracer(gpus=(0,), nvml=fake_nvml(), smi_runner=no_smi)


def test_gpu_not_present_names_the_accepted_ordinals(monkeypatch):
    with pytest.raises(ValueError, match=r"GPU 4 is not present: this process sees 4 GPU\(s\); "
                                         r"accepted CUDA ordinals: 0, 1, 2, 3"):
        Tracer(gpus=(4,), nvml=fake_nvml())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    dev = fake_nvml()
    with pytest.raises(ValueError, match=r"GPU 1 is not present.*CUDA_VISIBLE_DEVICES='3'.*accepted CUDA ordinals: 0$"):
        Tracer(gpus=(1,), nvml=dev)
    dev.shutdown.assert_called()  # NVML released even though the tracer never started


def test_ambiguous_uuid_prefix_and_repeats_raise(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaa")
    with pytest.raises(ValueError, match=r"'GPU-aaa' is ambiguous.*\[0, 2\]"):
        Tracer(nvml=fake_nvml())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,GPU-bbbb")
    with pytest.raises(ValueError, match="physical GPU 1 twice"):
        Tracer(nvml=fake_nvml())


def test_mixed_models_without_pci_order_warn(monkeypatch):
    names = ["NVIDIA A100", "NVIDIA H100", "NVIDIA H100", "NVIDIA H100"]
    with pytest.warns(TracerWarning, match="CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        Tracer(source="nvml", nvml=fake_nvml(names=names)).stop()
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TracerWarning)
        Tracer(source="nvml", nvml=fake_nvml(names=names)).stop()


def test_mig_needs_nvml_with_smi(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-9f1c")
    with pytest.raises(ValueError, match="needs NVML"):
        Tracer(source="smi", smi_runner=smi_fixture("nvidia-h200-x2-idle.xml"))


# -- the device layer itself, against a stand-in pynvml module ---------------------------------------

class _NVMLError(Exception):
    def __init__(self, value):
        super().__init__(f"NVML error {value}")
        self.value = value


def _fake_pynvml(field_returns=(0, 0), energy_supported=True, usage_error=None):
    import types

    n = types.SimpleNamespace()
    n.NVMLError = _NVMLError
    n.NVML_ERROR_NOT_SUPPORTED, n.NVML_ERROR_FUNCTION_NOT_FOUND, n.NVML_ERROR_GPU_IS_LOST = 3, 13, 15
    n.NVML_FI_DEV_POWER_AVERAGE, n.NVML_FI_DEV_POWER_INSTANT = 185, 186
    n.NVML_VALUE_TYPE_DOUBLE, n.NVML_VALUE_TYPE_UNSIGNED_INT = 0, 1
    n.NVML_VALUE_TYPE_UNSIGNED_LONG, n.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 2, 3
    n.NVML_VALUE_TYPE_SIGNED_LONG_LONG, n.NVML_VALUE_TYPE_SIGNED_INT, n.NVML_VALUE_TYPE_UNSIGNED_SHORT = 4, 5, 6
    n.NVML_CLOCK_SM, n.NVML_TEMPERATURE_GPU = 1, 0
    n.calls = []
    n.nvmlInit = lambda: n.calls.append("init")
    n.nvmlShutdown = lambda: n.calls.append("shutdown")
    n.nvmlDeviceGetCount = lambda: 2
    n.nvmlDeviceGetHandleByIndex = lambda i: f"h{i}"
    n.nvmlSystemGetDriverVersion = lambda: b"580.159.04"
    n.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    n.nvmlDeviceGetUUID = lambda h: "GPU-" + h

    def usage(h):
        if usage_error:
            raise _NVMLError(usage_error)
        return 123456  # mW

    n.nvmlDeviceGetPowerUsage = usage

    def fields(h, ids):
        val = lambda mw, ret: types.SimpleNamespace(  # noqa: E731
            nvmlReturn=ret, valueType=1, value=types.SimpleNamespace(uiVal=mw))
        return [val(700_000, field_returns[0]), val(712_500, field_returns[1])]

    n.nvmlDeviceGetFieldValues = fields

    def energy(h):
        if not energy_supported:
            raise _NVMLError(3)
        return 5_000_123  # mJ

    n.nvmlDeviceGetTotalEnergyConsumption = energy
    n.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=99, memory=23)
    n.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=883 * 2**20)
    n.nvmlDeviceGetClockInfo = lambda h, c: 1440

    def temp(h, s):
        raise _NVMLError(3)

    n.nvmlDeviceGetTemperature = temp
    n.nvmlDeviceGetHandleByUUID = lambda u: "mig"
    n.nvmlDeviceGetDeviceHandleFromMigDeviceHandle = lambda h: "h1"
    n.nvmlDeviceGetIndex = lambda h: 1
    return n


def test_device_layer_units_and_unsupported_readings(monkeypatch):
    import sys

    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    d = NvmlDevices()
    d.init()
    assert d.count() == 2 and d.driver_version() == "580.159.04" and d.name(0) == "NVIDIA H100 80GB HBM3"
    assert d.uuid(1) == "GPU-h1" and d.mig_parent_index("MIG-x") == 1
    assert d.power_fields_w(0) == (700.0, 712.5)  # mW -> W
    assert d.power_usage_w(0) == pytest.approx(123.456)
    assert d.total_energy_j(0) == pytest.approx(5000.123)  # mJ -> J
    assert d.utilization_pct(0) == (99.0, 23.0) and d.memory_used_mib(0) == 883.0 and d.sm_clock_mhz(0) == 1440.0
    assert math.isnan(d.temperature_c(0))  # not supported -> NaN, never 0
    d.shutdown()
    assert fake.calls == ["init", "shutdown"]


def test_device_layer_failures(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(field_returns=(3, 0), energy_supported=False,
                                                            usage_error=15))
    d = NvmlDevices()
    d.init()
    avg, inst = d.power_fields_w(0)
    assert math.isnan(avg) and inst == 712.5  # one field unsupported
    with pytest.raises(DeviceError, match="energy counter"):
        d.total_energy_j(0)
    with pytest.raises(DeviceError):  # GPU lost is an error, not a missing reading
        d.power_usage_w(0)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    with pytest.raises(DeviceError, match="not installed"):
        NvmlDevices().init()


def test_saved_trace_names_the_gpu_and_driver_after_nvml_shut_down(tmp_path):
    import json

    with Tracer(gpus=(0,), nvml=fake_nvml(), interval_s=0.01) as t:
        with t.window("w"):
            time.sleep(0.02)
    t.save(tmp_path)
    doc = json.loads((tmp_path / "windows.json").read_text())
    assert doc["device"]["driver"] == "580.159.04" and doc["device"]["gpu_names"] == ["NVIDIA H100 80GB HBM3"]
    assert doc["source"] == "counter" and doc["windows"][0]["energy_source"] == "counter"
    assert doc["lag_shift_s"] == 0.5 and doc["power_field"] == "average"

"""The smi source: parse every real capture; survive a missing, hanging or garbage nvidia-smi."""
from __future__ import annotations

import math
import os
import stat
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from greenlib.tracer import GPUTracer, SubprocessRunner, Tracer, TracerWarning, parse_smi_xml
from greenlib.tracer.base import SourceError

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"
XML_FILES = sorted(FIXTURES.glob("*.xml"))
NUMERIC = ("power_w", "power_instant_w", "power_average_w", "power_draw_w", "gpu_util_pct", "mem_util_pct",
           "mem_used_mib", "sm_clock_mhz", "temp_c")

# (file, gpu position) -> the values in the file, read by eye. NaN where the file says N/A.
NAN = float("nan")
EXPECTED = {
    ("h100-sxm-driver580-idle.xml", 0): dict(name="NVIDIA H100 80GB HBM3", power_w=123.06, power_w_field="average",
                                             power_instant_w=122.34, gpu_util_pct=0, mem_util_pct=0, mem_used_mib=0,
                                             sm_clock_mhz=1980, temp_c=38),
    ("nvidia-h200-x2-gpu0-busy.xml", 0): dict(name="NVIDIA H200", power_w=690.85, power_instant_w=676.38,
                                              gpu_util_pct=99, mem_util_pct=23, mem_used_mib=883,
                                              sm_clock_mhz=1440, temp_c=57, pci_bus_id="00000000:00:06.0"),
    ("nvidia-h200-x2-gpu0-busy.xml", 1): dict(name="NVIDIA H200", power_w=81.71, power_instant_w=82.12,
                                              gpu_util_pct=0, mem_used_mib=4, sm_clock_mhz=345, temp_c=35,
                                              pci_bus_id="00000000:00:07.0", minor_number=1),
    ("nvidia-h200-x2-idle.xml", 0): dict(power_w=80.48, power_instant_w=80.99, temp_c=37),
    ("nvidia-h200-x2-idle.xml", 1): dict(power_w=81.82, power_instant_w=81.80, temp_c=36),
    ("a100-sxm4-driver535.xml", 0): dict(name="NVIDIA A100-SXM4-80GB", power_w=67.03, power_w_field="power_draw",
                                         power_average_w=NAN, power_instant_w=NAN, gpu_util_pct=NAN,
                                         mem_util_pct=NAN, mem_used_mib=50, sm_clock_mhz=1275, temp_c=27),
    ("tesla-p100-driver510.xml", 0): dict(name="Tesla P100-PCIE-16GB", power_w=26.16, power_w_field="power_draw",
                                          power_average_w=NAN, gpu_util_pct=0, mem_used_mib=0, sm_clock_mhz=405,
                                          temp_c=38),
    ("tesla-t4-driver515.xml", 0): dict(name="Tesla T4", power_w=26.78, power_w_field="power_draw",
                                        mem_used_mib=1032, sm_clock_mhz=585, temp_c=40),
    ("dual-rtx-2080-driver590.xml", 0): dict(power_w=1.00, power_w_field="instant", power_average_w=NAN,
                                             power_instant_w=1.00, sm_clock_mhz=300, temp_c=15, minor_number=0),
    ("dual-rtx-2080-driver590.xml", 1): dict(power_w=1.62, power_w_field="instant", power_average_w=NAN,
                                             power_instant_w=1.62, minor_number=1),
    ("gtx-1070-ti-power-na.xml", 0): dict(name="GeForce GTX 1070 Ti", power_w=NAN, power_w_field=None,
                                          power_average_w=NAN, power_instant_w=NAN, power_draw_w=NAN,
                                          gpu_util_pct=0, mem_used_mib=42, sm_clock_mhz=135, temp_c=39),
}


def _same(a, b) -> bool:
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    return a == b


def _gpu_count(text: str) -> int:
    return text.count("<gpu id=")


def test_every_fixture_has_expected_values():
    assert {f for f, _ in EXPECTED} == {p.name for p in XML_FILES}, "a fixture without checked values"
    for (fname, i), want in EXPECTED.items():
        records = parse_smi_xml((FIXTURES / fname).read_text())
        for key, value in want.items():
            assert _same(records[i][key], value), f"{fname} GPU {i} {key}: {records[i][key]!r} != {value!r}"


@pytest.mark.parametrize("path", XML_FILES, ids=lambda p: p.name)
def test_fixture_parses_one_record_per_gpu_in_file_order(path):
    text = path.read_text()
    records = parse_smi_xml(text)
    assert len(records) == _gpu_count(text) >= 1
    for r in records:
        for key in NUMERIC:
            assert isinstance(r[key], float), (key, r[key])
            assert math.isnan(r[key]) or r[key] >= 0
        # a power figure is reported exactly when one of the three layouts had a number
        assert (r["power_w_field"] is None) == math.isnan(r["power_w"])
    if len(records) > 1:  # several <gpu>: xmltodict gives a list; order is the file's
        ids = [r["pci_bus_id"] for r in records]
        assert ids == sorted(ids)


def test_na_is_nan_never_zero():
    records = parse_smi_xml((FIXTURES / "gtx-1070-ti-power-na.xml").read_text())
    assert math.isnan(records[0]["power_w"])  # <power_draw>N/A</power_draw>
    a100 = parse_smi_xml((FIXTURES / "a100-sxm4-driver535.xml").read_text())[0]
    assert math.isnan(a100["gpu_util_pct"]) and math.isnan(a100["mem_util_pct"])


def test_single_gpu_dict_and_several_gpus_list():
    one = parse_smi_xml((FIXTURES / "h100-sxm-driver580-idle.xml").read_text())
    two = parse_smi_xml((FIXTURES / "nvidia-h200-x2-idle.xml").read_text())
    assert len(one) == 1 and len(two) == 2
    assert [r["minor_number"] for r in two] == [0, 1]


def test_busy_capture_matches_query_csv_taken_at_the_same_moment():
    records = parse_smi_xml((FIXTURES / "nvidia-h200-x2-gpu0-busy.xml").read_text())
    csv = pd.read_csv(FIXTURES / "nvidia-h200-x2-gpu0-busy-query.csv", skipinitialspace=True)
    num = lambda v: float(str(v).split()[0])  # noqa: E731  "692.68 W" -> 692.68
    for _, row in csv.iterrows():
        r = records[int(row["index"])]
        assert r["name"] == row["name"]
        # power.draw is the one-second average on this driver: compare like with like
        assert num(row["power.draw [W]"]) == num(row["power.draw.average [W]"])
        assert r["power_w"] == pytest.approx(num(row["power.draw.average [W]"]), rel=0.01)
        assert r["power_instant_w"] == pytest.approx(num(row["power.draw.instant [W]"]), rel=0.05)
        assert r["mem_used_mib"] == num(row["memory.used [MiB]"])
        assert r["temp_c"] == num(row["temperature.gpu"])
        assert r["gpu_util_pct"] == pytest.approx(num(row["utilization.gpu [%]"]), abs=2)
        assert r["sm_clock_mhz"] == pytest.approx(num(row["clocks.current.sm [MHz]"]), rel=0.02)
    assert records[0]["power_w"] == pytest.approx(690, rel=0.02)
    assert records[1]["power_w"] == pytest.approx(82, rel=0.02)


def test_all_na_synthetic_layout():
    xml = """<?xml version="1.0" ?><nvidia_smi_log><attached_gpus>1</attached_gpus><gpu id="0">
      <product_name>X</product_name><gpu_power_readings><average_power_draw>N/A</average_power_draw>
      <instant_power_draw>[N/A]</instant_power_draw></gpu_power_readings>
      <utilization><gpu_util>N/A</gpu_util></utilization><fb_memory_usage><used>N/A</used></fb_memory_usage>
      </gpu></nvidia_smi_log>"""
    (r,) = parse_smi_xml(xml)
    assert all(math.isnan(r[k]) for k in NUMERIC) and r["power_w_field"] is None


@pytest.mark.parametrize("text", ["garbage", "", "   ", "<html><body>hi</body></html>", "<nvidia_smi_log>"])
def test_garbage_raises_clear_value_error(text):
    with pytest.raises(ValueError, match="nvidia-smi|nvidia_smi_log|XML"):
        parse_smi_xml(text)


def test_bytes_parse_like_text_and_other_types_are_named():
    path = FIXTURES / "nvidia-h200-x2-gpu0-busy.xml"
    as_bytes = parse_smi_xml(path.read_bytes())  # a subprocess's raw stdout
    assert [r["power_w"] for r in as_bytes] == [r["power_w"] for r in parse_smi_xml(path.read_text())] == [690.85,
                                                                                                             81.71]
    with pytest.raises(ValueError, match="printed nothing"):
        parse_smi_xml(b"  \n")
    with pytest.raises(TypeError, match="str or bytes, not int"):
        parse_smi_xml(42)


# -- the smi source inside a tracer, with an injected runner -----------------------------------------

def _fixture_runner(name: str):
    text = (FIXTURES / name).read_text()
    calls = []

    def run(argv, timeout_s):
        calls.append((tuple(argv), timeout_s))
        return text
    run.calls = calls
    return run


def test_smi_tracer_reads_the_chosen_gpu_from_fixture():
    run = _fixture_runner("nvidia-h200-x2-gpu0-busy.xml")
    with Tracer(gpus=(1,), source="smi", interval_s=0.02, smi_runner=run, smi_timeout_s=1.5) as t:
        with t.window("w"):
            time.sleep(0.25)
    w = t.windows["w"]
    assert t.source_name == "smi" and w.energy_source == "smi"
    assert run.calls[0] == (("nvidia-smi", "-q", "-x"), 1.5)
    assert set(t.samples()["power_w"]) == {81.71}
    assert w.energy_j == pytest.approx(81.71 * w.elapsed_s, rel=1e-9)
    assert w.counter_energy_j != w.counter_energy_j  # no counter: NaN
    assert t.lag_shift_s == 0.5  # driver 580 reports the one-second average


def test_smi_cuda_visible_devices_maps_to_the_other_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    run = _fixture_runner("nvidia-h200-x2-gpu0-busy.xml")
    with Tracer(gpus=(0,), source="smi", interval_s=0.02, smi_runner=run) as t:
        time.sleep(0.05)
    assert t.physical_gpus == [1] and set(t.samples()["power_w"]) == {81.71}


def _counting(warning_list) -> int:
    return sum(issubclass(w.category, TracerWarning) for w in warning_list)


def test_runner_failing_every_call_gives_nan_with_reason_and_one_warning():
    def run(argv, timeout_s):
        raise SourceError("nvidia-smi not found")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Tracer(gpus=(0,), source="smi", interval_s=0.01, smi_runner=run) as t:
            with t.window("w"):
                time.sleep(0.2)
    w = t.windows["w"]
    assert _counting(caught) == 1
    assert t.n_failed_samples >= 10
    assert math.isnan(w.energy_j) and w.n_samples == 0 and w.n_missing_samples >= 10
    assert "no valid power sample" in w.reason


def test_garbage_after_a_good_probe_records_missing_samples_once_warned():
    good = (FIXTURES / "h100-sxm-driver580-idle.xml").read_text()
    outputs = iter([good])

    def run(argv, timeout_s):
        return next(outputs, "Unable to determine the device handle for GPU0000:00:06.0: Unknown Error")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Tracer(source="smi", interval_s=0.01, smi_runner=run) as t:
            with t.window("w"):
                time.sleep(0.15)
    assert _counting(caught) == 1 and "not XML" in str(caught[0].message)
    assert math.isnan(t.windows["w"].energy_j) and not t.samples()["valid"].any()


# -- real subprocesses: a fake nvidia-smi on PATH ------------------------------------------------

def _children() -> set[int]:
    """PIDs whose parent is this process (running or zombie)."""
    me, out = os.getpid(), set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                out.add(int(d.name))
    return out


def _fake_smi(tmp_path: Path, body: str, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


def _sampler_threads():
    return [t for t in threading.enumerate() if t.name == "greenlib-tracer-sampler"]


def test_hanging_nvidia_smi_is_killed_and_the_work_goes_on(tmp_path, monkeypatch):
    # not `exec`: the shell's child must die too (the runner kills the process group)
    _fake_smi(tmp_path, "sleep 30", monkeypatch)
    before = _children()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        with Tracer(gpus=(0,), source="smi", interval_s=0.05, smi_timeout_s=0.2) as t:
            with t.window("w"):
                total = sum(range(100_000))
                time.sleep(0.3)
        took = time.perf_counter() - t0
    assert total == 4999950000
    assert took < 3.0
    assert _counting(caught) == 1 and "timed out" in str(caught[0].message)
    assert math.isnan(t.windows["w"].energy_j) and t.windows["w"].reason
    assert _children() - before == set()
    assert not _sampler_threads()


def test_garbage_printing_nvidia_smi(tmp_path, monkeypatch):
    _fake_smi(tmp_path, "echo 'NVIDIA-SMI has failed because it could not communicate with the driver'", monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Tracer(gpus=(0,), source="smi", interval_s=0.02) as t:
            with t.window("w"):
                time.sleep(0.1)
    assert _counting(caught) == 1
    assert math.isnan(t.windows["w"].energy_j)


def test_failing_exit_status_is_reported(tmp_path, monkeypatch):
    _fake_smi(tmp_path, "echo 'Failed to initialize NVML' >&2; exit 9", monkeypatch)
    with pytest.raises(SourceError, match="status 9: Failed to initialize NVML"):
        SubprocessRunner()(["nvidia-smi", "-q", "-x"], 2.0)


def test_missing_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(SourceError, match="not found"):
        SubprocessRunner()(["nvidia-smi", "-q", "-x"], 1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Tracer(source="smi", interval_s=0.02) as t:
            with t.window("w"):
                time.sleep(0.1)
    assert _counting(caught) == 1 and "not found" in str(caught[0].message)
    assert math.isnan(t.windows["w"].energy_j)


def test_real_subprocess_reads_fixture(tmp_path, monkeypatch):
    _fake_smi(tmp_path, f"cat '{FIXTURES / 'nvidia-h200-x2-idle.xml'}'", monkeypatch)
    with Tracer(source="smi", interval_s=0.05) as t:
        with t.window("w"):
            time.sleep(0.2)
    w = t.windows["w"]
    assert t.gpus == [0, 1] and w.energy_j_per_gpu[0] == pytest.approx(80.48 * w.elapsed_s)
    assert w.energy_j == pytest.approx((80.48 + 81.82) * w.elapsed_s)


def test_exception_in_traced_function_with_smi_in_flight(tmp_path, monkeypatch):
    # the first call (the probe) answers; every later one hangs far past the test
    state = tmp_path / "probed"
    _fake_smi(tmp_path, f"if [ -e '{state}' ]; then sleep 30; else touch '{state}'; "
                        f"cat '{FIXTURES / 'h100-sxm-driver580-idle.xml'}'; fi", monkeypatch)
    before = _children()
    boom = RuntimeError("boom")

    @GPUTracer(mode="pruning", gpu_num=(0,), sampling_rate=0.05, source="smi", smi_timeout_s=20.0)
    def work():
        time.sleep(0.2)  # the sampler is now waiting on a hanging nvidia-smi
        raise boom

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError) as info:
        work()
    assert info.value is boom
    assert time.perf_counter() - t0 < 3  # stop() kills the child instead of waiting out the hang
    assert not _sampler_threads()
    assert _children() - before == set()

"""The two GPU scripts run end to end on the CPU (--dry-run / cpu source), as they will on an H100."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    # PATH without nvidia-smi so the run is the same on a GPU machine
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def test_measure_tracer_dry_run(tmp_path):
    out = _run(["scripts/measure_tracer.py", "--out", str(tmp_path), "--dry-run", "--seconds", "0.6"])
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "energy_table.csv").open()))
    assert {r["load"] for r in rows} == {"steady", "bursty"}
    ref = [r for r in rows if r["field"] == "energy"]
    assert len(ref) == 2 and all(float(r["energy_j"]) > 0 for r in ref)
    base = [r for r in rows if r["field"] == "average" and r["interval_s"] == "0.02"]
    assert all(abs(float(r["rel_err_pct"])) < 10 for r in base)  # every sample of the cpu counter's own series
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["dry_run"] is True and meta["torch"] and "date_utc" in meta
    assert (tmp_path / "traces" / "steady" / "cpu-0.02s" / "samples.csv.gz").exists()


def test_bench_tracer_overhead_cpu(tmp_path):
    out = _run(["scripts/bench_tracer_overhead.py", "--out", str(tmp_path), "--seconds", "0.5"])
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "overhead.json").read_text())
    assert [r["source"] for r in rows] == ["cpu"]
    assert 0 < rows[0]["sampler_cpu_pct"] < 50


def test_measure_tracer_gpu_path_with_mocked_devices(tmp_path, monkeypatch):
    """The non-dry-run path (counter + nvml subsampling + smi tracers) on a mocked NVML and a fixture."""
    import argparse
    import functools
    import importlib.util
    import math
    import time
    from unittest import mock

    from greenlib.tracer import NvmlDevices

    spec = importlib.util.spec_from_file_location("measure_tracer", REPO / "scripts" / "measure_tracer.py")
    mt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mt)

    dev = mock.create_autospec(NvmlDevices, instance=True)
    dev.count.return_value = 1
    dev.uuid.return_value = "GPU-0"
    dev.name.return_value = "NVIDIA H100 80GB HBM3"
    dev.driver_version.return_value = "580.159.04"
    dev.power_fields_w.return_value = (300.0, 320.0)
    dev.utilization_pct.return_value = (99.0, 20.0)
    dev.memory_used_mib.return_value = dev.sm_clock_mhz.return_value = dev.temperature_c.return_value = 1.0
    t0 = time.perf_counter()
    dev.total_energy_j.side_effect = lambda i: 300.0 * (time.perf_counter() - t0)
    xml = (REPO / "tests" / "fixtures" / "nvidia-smi" / "h100-sxm-driver580-idle.xml").read_text()
    monkeypatch.setattr(mt, "Tracer", functools.partial(mt.Tracer, nvml=dev, smi_runner=lambda argv, timeout: xml))
    monkeypatch.setattr(mt, "SMI_INTERVALS_S", (0.1, 0.5))

    class FakeLoad:
        def sync(self):
            pass

        def steady(self, seconds):
            time.sleep(seconds)
            return {"matmuls": 0}

    args = argparse.Namespace(dry_run=False, gpu=0, tail=0.6, lead=0.3, base_interval=0.02)
    rows, info = mt.run_load("steady", FakeLoad(), FakeLoad().steady, 1.2, args, "counter", True, tmp_path)
    by = {(r["source"], r["field"], r["interval_s"]): r for r in rows}
    ref = next(r for r in rows if r["field"] == "energy")
    assert ref["source"] == "counter"
    assert ref["energy_j"] == pytest.approx(300.0 * info["window_s"], rel=0.03)
    for x in (0.02, 0.1, 0.5, 1.0):
        avg, inst = by[("nvml", "average", x)], by[("nvml", "instant", x)]
        assert avg["energy_j"] == pytest.approx(300.0 * info["window_s"], rel=1e-6)
        assert avg["rel_err_pct"] == pytest.approx(0.0, abs=3)
        assert math.isfinite(avg["rel_err_corrected_pct"])  # the averaged field gets a lag-corrected figure
        assert inst["energy_j"] == pytest.approx(320.0 * info["window_s"], rel=1e-6)
        assert math.isnan(inst["energy_corrected_j"])
    assert by[("nvml", "average", 1.0)]["n_phases"] == 10
    smi = by[("smi", "average", 0.5)]
    assert smi["energy_j"] == pytest.approx(123.06 * info["window_s"], rel=1e-6)
    assert smi["rel_err_pct"] == pytest.approx(100 * (123.06 / 300.0 - 1), abs=3)
    assert info["smi_failed_samples"] == {"0.1": 0, "0.5": 0}
    assert (tmp_path / "traces" / "steady" / "counter-0.02s" / "windows.json").exists()
    assert (tmp_path / "traces" / "steady" / "smi-0.5s" / "samples.csv.gz").exists()

"""The cpu source: RAPL counters (a fake powercap folder) and the flagged CPU-time estimate."""
from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greenlib.tracer import CPU_W_PER_CORE, CpuSource, Tracer, trace
from greenlib.tracer.summary import WindowSummary


def make_rapl(root: Path, packages: dict[int, int], wrap: int = 1_000_000) -> Path:
    """A powercap folder: package zones with sub-zones and a psys zone that must be ignored."""
    for n, uj in packages.items():
        z = root / f"intel-rapl:{n}"
        z.mkdir(parents=True)
        (z / "name").write_text(f"package-{n}\n")
        (z / "energy_uj").write_text(f"{uj}\n")
        (z / "max_energy_range_uj").write_text(f"{wrap}\n")
        sub = root / f"intel-rapl:{n}:0"
        sub.mkdir()
        (sub / "name").write_text("core\n")
        (sub / "energy_uj").write_text("999999\n")
        (sub / "max_energy_range_uj").write_text(f"{wrap}\n")
    psys = root / f"intel-rapl:{len(packages)}"
    psys.mkdir()
    (psys / "name").write_text("psys\n")
    (psys / "energy_uj").write_text("555555\n")
    (psys / "max_energy_range_uj").write_text(f"{wrap}\n")
    return root


def set_uj(root: Path, n: int, uj: int) -> None:
    (root / f"intel-rapl:{n}" / "energy_uj").write_text(f"{uj}\n")


def test_rapl_sums_packages_and_handles_wrap(tmp_path):
    root = make_rapl(tmp_path, {0: 100_000, 1: 990_000}, wrap=1_000_000)
    src = CpuSource(root)
    assert not src.estimated and src.counter_label == "cpu-rapl"
    assert len(src.rapl.zones) == 2  # the sub-zones and psys are not counted
    assert src.read_counter_j() == {-1: 0.0}
    set_uj(root, 0, 600_000)   # +0.5 J
    set_uj(root, 1, 40_000)    # wrapped: +0.05 J
    assert src.read_counter_j()[-1] == pytest.approx(0.55)
    set_uj(root, 1, 90_000)    # +0.05 J
    assert src.read_counter_j()[-1] == pytest.approx(0.60)


def test_unreadable_rapl_falls_back_to_estimate(tmp_path):
    root = make_rapl(tmp_path, {0: 1})
    f = root / "intel-rapl:0" / "energy_uj"
    f.unlink()
    f.mkdir()  # unreadable even for root (a chmod 000 file is not); stands in for a root-only counter
    src = CpuSource(root, cpu_time=lambda: 0.0)
    assert src.estimated and "not readable" in src.estimate_note


def test_estimate_is_cpu_time_times_watts_per_core(tmp_path):
    clock = iter([10.0, 10.0, 12.5])
    src = CpuSource(tmp_path / "none", cpu_time=lambda: next(clock))
    assert src.estimated and src.counter_label == "cpu-estimate"
    assert src.read_counter_j() == {-1: 0.0}
    assert src.read_counter_j() == {-1: pytest.approx(2.5 * CPU_W_PER_CORE)}
    assert "no RAPL" in src.estimate_note and f"{CPU_W_PER_CORE:g} W per core" in src.estimate_note


def test_tracer_on_fake_rapl_is_a_measurement(tmp_path):
    root = make_rapl(tmp_path, {0: 0})
    with Tracer(source="cpu", rapl_root=root, interval_s=0.01) as t:
        with t.window("w"):
            set_uj(root, 0, 3_000_000)  # 3 J used inside the window
            time.sleep(0.05)
    w = t.windows["w"]
    assert w.energy_source == "cpu-rapl" and not w.estimated and w.reason is None
    assert w.energy_j == pytest.approx(3.0) and w.energy_j_per_gpu == {-1: pytest.approx(3.0)}


def test_tracer_estimate_is_flagged_everywhere(tmp_path):
    with trace("busy", source="cpu", rapl_root=tmp_path, interval_s=0.01) as t:
        deadline = time.process_time() + 0.15
        while time.process_time() < deadline:
            pass
    w = t.windows["busy"]
    assert t.source_name == "cpu" and t.source.estimated
    assert w.estimated is True and w.energy_source == "cpu-estimate"
    assert w.reason.startswith("estimated from the CPU time of this process")
    # at least the busy loop's CPU time, at most all of the process's (2 cores on CI)
    assert 0.15 * CPU_W_PER_CORE * 0.9 <= w.energy_j <= w.elapsed_s * CPU_W_PER_CORE * 4
    assert t.metadata()["estimated"] is True


def test_estimate_is_kept_apart_from_the_counter_field(tmp_path):
    with trace("busy", source="cpu", rapl_root=tmp_path, interval_s=0.01) as t:
        time.sleep(0.02)
    w = t.windows["busy"]
    assert w.energy_source == "cpu-estimate" and math.isnan(w.counter_energy_j)  # no hardware counter here
    assert w.estimated_energy_j == w.energy_j >= 0
    # a summary stored before estimated_energy_j existed (its counter field held the estimate) reads back right
    old = {k: v for k, v in w.to_dict().items() if k != "estimated_energy_j"} | {"counter_energy_j": 1.5}
    back = WindowSummary.from_dict(old)
    assert back.estimated_energy_j == 1.5 and math.isnan(back.counter_energy_j)
    root = make_rapl(tmp_path / "rapl", {0: 0})
    with trace("rapl", source="cpu", rapl_root=root, interval_s=0.01) as t:
        set_uj(root, 0, 2_000_000)
        time.sleep(0.02)
    r = t.windows["rapl"]
    assert r.counter_energy_j == pytest.approx(2.0) and math.isnan(r.estimated_energy_j)
    assert WindowSummary.from_dict(r.to_dict()).counter_energy_j == pytest.approx(2.0)


_BURN = """
import sys, time
end = time.process_time() + float(sys.argv[1])
while time.process_time() < end:
    pass
print("burnt", flush=True)
time.sleep(60)
"""


def test_estimate_counts_child_processes_such_as_dataloader_workers(tmp_path):
    src = CpuSource(tmp_path / "none")  # the default clock: this process and its children
    assert src.estimated and "child processes (DataLoader workers)" in src.estimate_note
    before = src.read_counter_j()[-1]
    own = time.process_time()
    child = subprocess.Popen([sys.executable, "-c", _BURN, "0.4"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "burnt"  # 0.4 s of CPU used, the worker still alive
        src._cpu_time.refresh_s = 0.0
        during = src.read_counter_j()[-1]
    finally:
        child.kill()
        child.wait()
    child_j = during - before - (time.process_time() - own) * CPU_W_PER_CORE
    assert child_j >= 0.4 * CPU_W_PER_CORE * 0.9
    assert src.read_counter_j()[-1] >= during  # a finished worker's CPU time stays counted

"""CUDA_VISIBLE_DEVICES -> physical GPU, for every ordering of the GPUs (as Zeus's tests do).

A process started by the scale-out grid sees one GPU (``CUDA_VISIBLE_DEVICES=<slot>``) and a
torchrun rank sees all of them and picks ``cuda:<local rank>``: either way the tracer must read the
physical GPU the work runs on. NVML is an autospec'd stand-in; nvidia-smi is a captured fixture.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from unittest import mock

import pytest

from greenlib.tracer import NvmlDevices, Tracer, TracerWarning, visible_gpus
from greenlib.tracer import gpus as gpumap
from greenlib.tracer.base import SourceError

UUIDS = ["GPU-0a1b2c3d-0000", "GPU-1b2c3d4e-1111", "GPU-2c3d4e5f-2222", "GPU-3d4e5f60-3333"]
N = len(UUIDS)
# every ordering of every non-empty subset of the 4 GPUs: 4 + 12 + 24 + 24 = 64
ORDERINGS = [p for k in range(1, N + 1) for p in itertools.permutations(range(N), k)]
SMI = Path(__file__).parent / "fixtures" / "nvidia-smi" / "nvidia-h200-x2-gpu0-busy.xml"


def fake_nvml():
    """Physical GPU i draws 100 + i W; its MIG instance ``MIG-<i>`` belongs to it."""
    dev = mock.create_autospec(NvmlDevices, instance=True)
    dev.count.return_value = N
    dev.uuid.side_effect = lambda i: UUIDS[i]
    dev.name.side_effect = lambda i: f"GPU model {i}"
    dev.driver_version.return_value = "580.159.04"
    dev.power_fields_w.side_effect = lambda i: (100.0 + i, 100.0 + i)
    dev.power_usage_w.side_effect = lambda i: 100.0 + i
    dev.utilization_pct.return_value = (50.0, 10.0)
    dev.memory_used_mib.return_value = 1.0
    dev.sm_clock_mhz.return_value = 1.0
    dev.temperature_c.return_value = 40.0
    dev.total_energy_j.side_effect = lambda i: 1e3 * i
    dev.mig_parent_index.side_effect = lambda u: int(u.split("-")[1])
    return dev


def no_smi(argv, timeout_s):
    raise SourceError("nvidia-smi not found")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)


def _forms(order):
    """The same ordering written as CUDA accepts it: indices, full UUIDs, UUID prefixes, MIG UUIDs."""
    return {
        "index": ",".join(map(str, order)),
        "uuid": ",".join(UUIDS[p] for p in order),
        "prefix": ",".join(UUIDS[p][:6] for p in order),  # 'GPU-0a', 'GPU-1b': unique prefixes
        "mig": ",".join(f"MIG-{p}" for p in order),
        "mig-legacy": ",".join(f"MIG-{UUIDS[p]}/1/0" for p in order),
        "spaced": " , ".join(map(str, order)),
    }


@pytest.mark.parametrize("order", ORDERINGS, ids=lambda o: "-".join(map(str, o)))
def test_every_ordering_maps_each_ordinal_to_its_physical_gpu(order, monkeypatch):
    for form, value in _forms(order).items():
        assert gpumap.visible_physical(value, UUIDS, fake_nvml().mig_parent_index) == list(order), form
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", _forms(order)["index"])
    # every visible GPU at once: labelled 0..k-1, read at their physical indices
    t = Tracer(source="nvml", nvml=fake_nvml())
    t.stop()
    assert t.gpus == list(range(len(order))) and t.physical_gpus == list(order)
    # each CUDA ordinal alone (what one DDP rank or one grid job traces)
    for ordinal, physical in enumerate(order):
        dev = fake_nvml()
        t = Tracer(gpus=(ordinal,), source="counter", nvml=dev)
        t.stop()
        assert t.physical_gpus == [physical]
        assert t.source_name == "counter"
    # the first ordinal past the end is refused, naming the accepted ones
    accepted = ", ".join(map(str, range(len(order))))
    with pytest.raises(ValueError, match=rf"GPU {len(order)} is not present: this process sees {len(order)} "
                                         rf"GPU\(s\) with CUDA_VISIBLE_DEVICES=.*accepted CUDA ordinals: {accepted}$"):
        Tracer(gpus=(len(order),), source="nvml", nvml=fake_nvml())


@pytest.mark.parametrize("order", [(0, 1), (1, 0), (2, 3, 1), (3,)])
def test_readings_come_from_the_physical_gpu(order, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(UUIDS[p] for p in order))
    dev = fake_nvml()
    with Tracer(source="nvml", nvml=dev, interval_s=0.01) as t:
        time.sleep(0.05)
    df = t.samples()
    for ordinal, physical in enumerate(order):
        rows = df[df["gpu"] == ordinal]
        assert len(rows) and set(rows["physical_index"]) == {physical}
        assert set(rows["power_w"]) == {100.0 + physical}  # physical GPU p draws 100 + p W


@pytest.mark.parametrize("env, gpus, power", [("0,1", (0,), 690.85), ("0,1", (1,), 81.71), ("1,0", (0,), 81.71),
                                              ("1,0", (1,), 690.85), ("1", (0,), 81.71), (None, (1,), 81.71)])
def test_nvidia_smi_source_follows_the_ordering(env, gpus, power, monkeypatch):
    # 2x H200 capture: physical GPU 0 busy (690.85 W average), GPU 1 idle (81.71 W)
    if env is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    text = SMI.read_text()
    with Tracer(gpus=gpus, source="smi", interval_s=0.02, smi_runner=lambda argv, timeout_s: text) as t:
        time.sleep(0.05)
    assert set(t.samples()["power_w"]) == {power}


def test_mig_legacy_form_needs_no_nvml():
    # the CUDA 11.0 form names its GPU's UUID, so nvidia-smi alone can place it
    assert gpumap.visible_physical(f"MIG-{UUIDS[2]}/7/0", UUIDS) == [2]
    with pytest.warns(TracerWarning, match="ignored"):  # an unknown GPU: the list stops there, as CUDA's does
        assert gpumap.visible_physical("MIG-GPU-ffffffff/1/0,1", UUIDS) == []


def test_visible_gpus_lists_ordinals_physical_indices_and_names():
    got = visible_gpus(nvml=fake_nvml(), env={"CUDA_VISIBLE_DEVICES": "3,GPU-1b"})
    assert got == [{"ordinal": 0, "physical": 3, "name": "GPU model 3", "uuid": UUIDS[3]},
                   {"ordinal": 1, "physical": 1, "name": "GPU model 1", "uuid": UUIDS[1]}]
    assert [g["physical"] for g in visible_gpus(nvml=fake_nvml(), env={})] == [0, 1, 2, 3]
    from greenlib.tracer import DeviceError

    broken = fake_nvml()
    broken.init.side_effect = DeviceError("NVML Shared Library Not Found")
    assert visible_gpus(nvml=broken, env={}) == []

"""IEC over a traced window: per-image energy, the window's length, and a window that recorded nothing."""
from __future__ import annotations

import contextlib
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from greenlib.inference import measure_inference, precision_stack, tf32_enabled


class FixedPowerTracer:
    """A tracer whose windows draw ``power_w`` for as long as they are open."""

    def __init__(self, power_w: float):
        self.power_w, self.windows = power_w, {}

    @contextmanager
    def window(self, name):
        t0 = time.perf_counter()
        yield
        elapsed = time.perf_counter() - t0
        summary = {"energy_j": self.power_w * elapsed, "elapsed_s": elapsed, "energy_source": "fake"}
        self.windows[name] = SimpleNamespace(to_dict=lambda: dict(summary))


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = 0
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        self.seen += x.shape[0]
        return self.fc(x.flatten(1))


def test_iec_is_the_window_energy_per_image_over_at_least_min_seconds():
    model, tracer = Counting(), FixedPowerTracer(40.0)
    out = measure_inference(model, torch.randn(10, 3, 4, 4), tracer, batch_size=4, min_seconds=0.05, warmup_s=0.01)
    assert out["batch_size"] == 4 and out["images"] == 4 * out["batches"] and out["elapsed_s"] >= 0.05
    assert out["iec_j"] == pytest.approx(40.0 * out["elapsed_s"] / out["images"])
    assert out["iec_wh"] == pytest.approx(out["iec_j"] / 3600)
    assert out["throughput_ips"] == pytest.approx(out["images"] / out["elapsed_s"])
    assert out["latency_ms"] == pytest.approx(1e3 * out["elapsed_s"] / out["batches"])
    assert model.seen > out["images"]  # the warm-up ran too, and is not counted


def test_fewer_images_than_one_batch_are_repeated_to_fill_it():
    out = measure_inference(Counting(), torch.randn(3, 3, 4, 4), FixedPowerTracer(10.0), batch_size=8,
                            min_seconds=1.0, warmup_s=0.0, max_batches=5)
    assert out["batches"] == 5 and out["images"] == 40


def test_a_window_that_recorded_no_energy_is_an_error_not_an_iec_of_zero():
    with pytest.raises(RuntimeError, match=r"recorded 0\.0 J: .*raise min_seconds \(now 0\.02\)"):
        measure_inference(Counting(), torch.randn(8, 3, 4, 4), FixedPowerTracer(0.0), batch_size=4,
                          min_seconds=0.02, warmup_s=0.0)


@pytest.mark.parametrize("kwargs, match", [({"batch_size": 0, "min_seconds": 1.0}, "batch_size=0"),
                                           ({"batch_size": 2, "min_seconds": 0.0}, "min_seconds=0.0")])
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_inference(Counting(), torch.randn(4, 3, 4, 4), FixedPowerTracer(1.0), **kwargs)


class TF32Spy(Counting):
    def __init__(self):
        super().__init__()
        self.flags = set()

    def forward(self, x):
        self.flags.add((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return super().forward(x)


def _flags():
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("precision, on", [("fp32", False), ("tf32", True), ("int8", False)])
def test_the_iec_runs_on_one_named_stack_fp32_without_tf32(precision, on):
    before, model = _flags(), TF32Spy()
    out = measure_inference(model, torch.randn(8, 3, 4, 4), FixedPowerTracer(5.0), batch_size=4, min_seconds=0.01,
                            warmup_s=0.0, precision=precision)
    assert model.flags == {(on, on)}  # warm-up and window alike
    assert out["tf32"] is on and out["precision"] == precision and out["backend"] == "pytorch"
    assert out["stack"] == f"PyTorch {precision}, batch 4, TF32 {'on' if on else 'off'}"
    assert _flags() == before


def test_precision_stack_restores_the_flags_after_an_error_and_names_a_bad_precision():
    torch.backends.cudnn.allow_tf32 = True  # torch's default: fp32 convolutions as TF32
    try:
        with pytest.raises(KeyError):
            with precision_stack("fp32"):
                assert not tf32_enabled()
                raise KeyError("inside")
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32 = True
    with pytest.raises(ValueError, match=r"precision='fp64'; accepted: fp32, tf32"):
        with precision_stack("fp64"):
            pass


def test_a_graphed_window_needs_a_cuda_device_and_is_named_in_the_stack():
    with pytest.raises(ValueError, match=r"graph=True replays a CUDA graph; the images are on cpu"):
        measure_inference(Counting(), torch.randn(8, 3, 4, 4), FixedPowerTracer(10.0), batch_size=4,
                          min_seconds=0.01, warmup_s=0.0, graph=True)
    from greenlib.inference import stack_name
    assert stack_name("pytorch", "fp16", 128, False, graph=True) == "PyTorch fp16, batch 128, TF32 off, CUDA graph"
    assert measure_inference(Counting(), torch.randn(8, 3, 4, 4), FixedPowerTracer(10.0), batch_size=4,
                             min_seconds=0.01, warmup_s=0.0)["graph"] is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_graphed_forward_replays_the_eager_forward_on_every_batch():
    from greenlib.inference import graphed_forward
    from greenlib.models import build_model

    model = build_model("resnet8", num_classes=10).cuda().eval()
    batches = torch.randn(3, 16, 3, 32, 32, device="cuda")
    with torch.inference_mode():
        fwd = graphed_forward(model, batches[0])
        for b in batches:  # the static output follows each batch copied in
            torch.testing.assert_close(fwd(b).clone(), model(b))
        out = measure_inference(model, batches.flatten(0, 1), FixedPowerTracer(10.0), batch_size=16,
                                min_seconds=0.05, warmup_s=0.0, graph=True)
    assert out["graph"] is True and out["stack"].endswith(", CUDA graph") and out["images"] == 16 * out["batches"]


def test_the_graphed_iec_script_alternates_the_modes_and_refuses_a_machine_without_a_gpu(monkeypatch, tmp_path):
    import importlib.util

    from greenlib.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("measure_graphed_iec", REPO_ROOT / "scripts" / "measure_graphed_iec.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    if not torch.cuda.is_available():
        assert script.main(["--out", str(tmp_path / "x")]) == 2 and not (tmp_path / "x").exists()
    seen = []

    def fake(dep, images, tracer, *, graph, stage, **kw):  # records the order; no GPU needed
        seen.append((stage, graph))
        return {"images": 128, "elapsed_s": 1.0, "energy_j": 300.0 if graph else 400.0, "iec_wh": 1e-6,
                "throughput_ips": 128.0, "latency_ms": 1000.0, "mean_power_w": 300.0, "mean_gpu_util_pct": 99.0,
                "energy_source": "fake", "stack": "s", "batch_size": 128}

    monkeypatch.setattr(script, "measure_inference", fake)
    monkeypatch.setattr(script.experiments, "device_tracer", lambda device, source, interval: contextlib.nullcontext())
    monkeypatch.setattr(script, "quantize", lambda model, precision, calib, **kw: SimpleNamespace(input_dtype=torch.float32))
    monkeypatch.setattr(script.torch, "randn", lambda *a, device=None: torch.zeros(1))
    table = script.measure("resnet8", ["fp32", "fp16"], 128, 0.1, 3, "counter", log=lambda s: None)
    assert [g for _, g in seen] == [False, True, True, False, False, True] * 2
    assert list(table.columns) == script.COLUMNS and len(table) == 12
    assert set(table.loc[table["mode"] == "graph", "energy_j"]) == {300.0}


def test_the_iec_beside_training_script_pauses_its_neighbour_between_windows(tmp_path):
    # --smoke: the IEC windows and the training job both on the CPU; the job's CPU time says whether it ran
    import importlib.util

    import pandas as pd

    from greenlib.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("iec_beside_training", REPO_ROOT / "scripts" / "iec_beside_training.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    if not torch.cuda.is_available():
        assert script.main(["--out", str(tmp_path / "x")]) == 2 and not (tmp_path / "x").exists()
    assert script.main(["--out", str(tmp_path / "ab"), "--smoke", "--repeats", "2"]) == 0
    table = pd.read_csv(tmp_path / "ab" / "iec.csv")
    assert list(table["neighbour"]) == ["idle", "training", "training", "idle"]  # alone, beside, beside, alone
    assert (table.loc[table["neighbour"] == "idle", "busy_cpu_s"] == 0).all()  # paused: no CPU time
    assert (table.loc[table["neighbour"] == "training", "busy_cpu_s"] > 0).all()
    summary = pd.read_csv(tmp_path / "ab" / "summary.csv")
    assert summary.loc[0, "iec_beside_over_alone"] == pytest.approx(
        table.loc[table["neighbour"] == "training", "iec_wh"].mean() / table.loc[table["neighbour"] == "idle", "iec_wh"].mean())
    assert (tmp_path / "ab" / "environment.json").exists()

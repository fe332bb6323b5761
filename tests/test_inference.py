"""IEC over a traced window: per-image energy, the window's length, and a window that recorded nothing."""
from __future__ import annotations

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

"""Quantization: backend choice, precision checks, the CPU int8 path, the TensorRT path up to the
engine build (ONNX, calibration feed, bindings; no TensorRT needed), and a cached run."""
import sys
import types
from unittest import mock

import pytest
import torch
from torch import nn

from greenlib import config, experiments
from greenlib import quantize as quant
from greenlib.quantize import trt_backend as trtb

try:
    import onnx  # noqa: F401

    HAVE_ONNX = True
except ImportError:
    HAVE_ONNX = False
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx is not installed (pip install onnx: the tensorrt extra)")
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny_net(classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


def colour_data(n: int, classes: int = 4, seed: int = 0):
    """Images whose class is their mean colour (plus noise): a tiny net learns it in a few steps."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])[:classes]
    y = torch.arange(n) % classes
    x = centres[y].view(n, 3, 1, 1) + 0.8 * torch.randn(n, 3, 32, 32, generator=g)
    return x, y


@pytest.fixture(scope="module")
def trained_tiny():
    torch.manual_seed(0)
    model = tiny_net()
    x, y = colour_data(512)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for step in range(60):
        i = torch.randint(0, 512, (64,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
    return model.eval()


def accuracy(model, x, y) -> float:
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


# --- interface, backend choice, validation --------------------------------------------------------
def test_without_tensorrt_auto_picks_pytorch_and_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    name, why = quant.select_backend("auto", "cpu")
    assert name == "pytorch" and "tensorrt is not importable" in why
    assert [v.backend for v in quant.plan(["fp32", "int8"], "auto", "cpu")] == ["pytorch", "pytorch"]
    v = quant.variant("fp32", "tensorrt", "cpu")
    assert v.backend == "tensorrt" and "tensorrt is not importable" in v.skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_importable_tensorrt_without_a_gpu_is_not_picked(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    name, why = quant.select_backend("auto", "cpu")
    assert name == "pytorch" and "no CUDA GPU" in why


@pytest.mark.parametrize("call, words", [
    (lambda m: quant.quantize(m, "int4"), ["'int4'", "fp32, tf32, fp16, bf16, int8"]),
    (lambda m: quant.quantize(m, "fp16", backend="onnxruntime"), ["'onnxruntime'", "auto, tensorrt, pytorch"]),
    (lambda m: quant.quantize(m, "int8", [], name="tiny"), ["calibration set is empty", "int8"]),
    (lambda m: quant.quantize(m, "int8", None), ["calibration set is empty"]),
    (lambda m: quant.quantize(m, "int8", [torch.zeros(3, 32, 32)]), ["calibration batch 0", "(3, 32, 32)"]),
    (lambda m: quant.quantize(m, "int8", [torch.zeros(2, 3, 32, 32)], calibrator="kl"), ["'kl'", "histogram"]),
])
def test_bad_input_is_a_clear_error_naming_it(call, words):
    with pytest.raises(quant.QuantizationError) as e:
        call(tiny_net())
    for w in words:
        assert w in str(e.value)


def test_calibration_batches_are_normalised_full_batches_of_the_training_prefix():
    x = torch.randint(0, 256, (70, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    batches = quant.calibration_batches(x, mean, std, 70, 32, "cpu")
    assert [tuple(b.shape) for b in batches] == [(32, 3, 32, 32)] * 2  # the partial batch of 6 is left out
    want = (x[:32].float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(batches[0], want)
    assert len(quant.calibration_batches(x, mean, std, 10, 32, "cpu")[0]) == 10  # fewer images than a batch
    for bad in (0, -1):
        with pytest.raises(quant.QuantizationError, match="calibration set is empty"):
            quant.calibration_batches(x, mean, std, bad, 32, "cpu")
    with pytest.raises(quant.QuantizationError, match="n_images=71"):
        quant.calibration_batches(x, mean, std, 71, 32, "cpu")


def test_plan_on_a_cpu_skips_fp16_and_bf16_with_a_reason_and_puts_int8_on_the_cpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    plan = {v.precision: v for v in quant.plan(list(quant.PRECISIONS), "auto", "cpu")}
    assert plan["fp32"].skip is None and plan["int8"].skip is None and plan["int8"].device.type == "cpu"
    for p in ("tf32", "fp16", "bf16"):
        assert "CUDA GPU" in plan[p].skip and p in plan[p].skip


def test_a_skipped_variant_is_refused_by_run_quantized_naming_it(ctx):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: fp16 is measurable")
    with pytest.raises(quant.QuantizationError, match="resnet8 fp16 .*CUDA GPU"):
        quant.run_quantized(ctx, "resnet8", "fp16", seed=0, progress=False)


def test_tensorrt_fp32_engines_clear_tf32_and_only_the_tf32_precision_sets_it(tmp_path):
    trt = mock.MagicMock()
    trt.Builder.return_value.build_serialized_network.return_value = b"engine"
    trt.OnnxParser.return_value.parse.return_value = True
    cfg = trt.Builder.return_value.create_builder_config.return_value
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"graph")
    shapes = {"input": ((1, 3, 32, 32),) * 3}
    trtb.build_engine(trt, onnx_file, "fp32", shapes)
    cfg.clear_flag.assert_called_once_with(trt.BuilderFlag.TF32)
    cfg.set_flag.assert_not_called()
    cfg.reset_mock()
    trtb.build_engine(trt, onnx_file, "tf32", shapes)
    cfg.set_flag.assert_called_once_with(trt.BuilderFlag.TF32)
    cfg.clear_flag.assert_not_called()


class FlagSpy(nn.Module):
    """Records whether TF32 was allowed each time it ran."""

    def __init__(self):
        super().__init__()
        self.fc, self.seen = nn.Linear(3, 2), []

    def forward(self, x):
        self.seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("precision, tf32", [("fp32", False), ("tf32", True)])
def test_a_deployable_runs_under_its_own_precision_stack_and_restores_the_flags(precision, tf32):
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    spy = FlagSpy()
    dep = quant.Deployable(spy, backend="pytorch", precision=precision, device="cpu", input_dtype=torch.float32,
                           kernel_path="spy")
    dep(torch.zeros(2, 3, 4, 4))
    assert spy.seen == [(tf32, tf32)]
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


# --- the PyTorch backend -------------------------------------------------------------------------------
def test_cpu_int8_runs_int8_kernels_and_keeps_fp32_accuracy(trained_tiny):
    x, y = colour_data(256, seed=1)
    calib = [x[:64], x[64:128]]
    dep = quant.quantize(trained_tiny, "int8", calib, name="tiny")
    assert (dep.backend, dep.precision, dep.device.type, dep.calibration_images) == ("pytorch", "int8", "cpu", 128)
    kinds = {type(m).__module__ for m in dep.modules()}
    assert any(k.startswith("torch.ao.nn.quantized") for k in kinds)  # real quantized modules, not fake-quant
    evidence = quant.kernel_evidence(dep, x[:16])
    assert any(op.startswith("quantized::conv2d") for op in evidence["int8_ops"])
    quant.require_int8(evidence, "tiny int8")  # does not raise
    fp32, int8 = accuracy(trained_tiny, x, y), accuracy(dep, x, y)
    assert fp32 > 0.9 and abs(fp32 - int8) <= 0.03
    assert not trained_tiny[0].weight.is_quantized  # the input model is left alone


def test_minmax_calibrator_also_yields_int8_kernels(trained_tiny):
    x, y = colour_data(128, seed=2)
    dep = quant.quantize(trained_tiny, "int8", [x[:64]], calibrator="minmax")
    assert dep.details["activation_observer"] == "MinMaxObserver"
    assert quant.kernel_evidence(dep, x[:8])["int8_ops"]
    assert accuracy(dep, x, y) > 0.85


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")  # torch's deprecation of quantized tensors
def test_a_simulated_int8_model_is_never_reported_as_int8(trained_tiny):
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_to_reference_fx, prepare_fx

    x = colour_data(64, seed=6)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        prepared = prepare_fx(tiny_net().eval(), get_default_qconfig_mapping("x86"), example_inputs=(x[:1],))
        prepared(x)
        reference = convert_to_reference_fx(prepared)  # quantize -> dequantize -> fp32 conv: simulated
    for module in (trained_tiny, reference):
        fake = quant.Deployable(module, backend="pytorch", precision="int8", device="cpu",
                                input_dtype=torch.float32, kernel_path="fp32 in disguise")
        evidence = quant.kernel_evidence(fake, x[:4])
        assert evidence["int8_ops"] == []
        with pytest.raises(quant.QuantizationError, match="no int8 op"):
            quant.require_int8(evidence, "tiny int8")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precisions_on_the_cpu_where_torch_supports_them(trained_tiny, precision):
    x, y = colour_data(64, seed=3)
    dep = quant.quantize(trained_tiny, precision, device="cpu")
    try:
        logits = quant.infer(dep, x)
    except RuntimeError as e:  # a torch build without CPU kernels for this dtype
        pytest.skip(f"torch {torch.__version__} has no CPU {precision} convolution: {e}")
    assert logits.dtype == torch.float32 and dep.input_dtype == quant.base.DTYPES[precision]
    assert next(dep.module.parameters()).dtype == quant.base.DTYPES[precision]
    assert abs(accuracy(dep, x, y) - accuracy(trained_tiny, x, y)) <= 0.05


@gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gpu_half_precisions_run_on_cuda(trained_tiny, precision):
    x, y = colour_data(128, seed=4)
    dep = quant.quantize(trained_tiny, precision, device="cuda")
    assert dep.device.type == "cuda" and "cuDNN" in dep.kernel_path
    assert abs(accuracy(dep, x.cuda(), y.cuda()) - accuracy(trained_tiny, x, y)) <= 0.05
    assert quant.kernel_evidence(dep, x[:32])["ops"]


# --- the TensorRT path up to the engine build ---------------------------------------------------------
@needs_onnx
def test_onnx_export_has_a_dynamic_batch_and_the_bindings_tensorrt_will_see(tmp_path):
    from greenlib.models import build_model

    path = trtb.export_onnx(build_model("resnet8"), tmp_path / "resnet8.onnx", name="resnet8")
    io = trtb.onnx_io(path)
    assert io == [trtb.TensorSpec("input", (-1, 3, 32, 32), torch.float32, True),
                  trtb.TensorSpec("logits", (-1, 100), torch.float32, False)]
    assert trtb.profile_shapes(io, 1, 16, 64) == {"input": ((1, 3, 32, 32), (16, 3, 32, 32), (64, 3, 32, 32))}
    assert io[1].resolve(7) == (7, 100)
    with pytest.raises(quant.QuantizationError, match="min=4, opt=2"):
        trtb.profile_shapes(io, 4, 2, 8)


@needs_onnx
def test_the_exported_graph_computes_what_the_model_computes(tmp_path, trained_tiny):
    from onnx.reference import ReferenceEvaluator

    path = trtb.export_onnx(trained_tiny, tmp_path / "tiny.onnx", name="tiny")
    x = colour_data(3, seed=5)[0]
    (got,) = ReferenceEvaluator(str(path)).run(None, {"input": x.numpy()})
    with torch.inference_mode():
        torch.testing.assert_close(torch.from_numpy(got), trained_tiny(x), atol=1e-4, rtol=1e-4)


@needs_onnx
def test_a_model_that_does_not_export_is_named(tmp_path):
    class SpectralNet(nn.Module):
        def forward(self, x):
            return torch.fft.fft2(x).real.mean((2, 3))

    with pytest.raises(quant.QuantizationError, match="ONNX export of spectralnet failed"):
        trtb.export_onnx(SpectralNet(), tmp_path / "s.onnx", name="spectralnet")


def test_without_onnx_the_export_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(quant.QuantizationError, match="needs the onnx package"):
        trtb.export_onnx(tiny_net(), tmp_path / "t.onnx", name="tiny")


def test_calibration_feed_hands_out_each_batch_once_then_none():
    batches = [torch.randn(8, 3, 32, 32) for _ in range(3)]
    feed = trtb.CalibrationFeed(batches, device="cpu")
    assert feed.get_batch_size() == 8 and feed.images == 24
    ptrs = [feed.get_batch(["input"]) for _ in range(3)]
    assert ptrs == [[b.data_ptr()] for b in feed.batches] and feed.get_batch(["input"]) is None
    assert feed.read_calibration_cache() is None
    feed.write_calibration_cache(memoryview(b"scales"))
    assert feed.read_calibration_cache() == b"scales"
    with pytest.raises(quant.QuantizationError, match="'x'"):
        trtb.CalibrationFeed(batches, device="cpu").get_batch(["x"])
    with pytest.raises(quant.QuantizationError, match="one shape"):
        trtb.CalibrationFeed([torch.zeros(8, 3, 32, 32), torch.zeros(4, 3, 32, 32)], device="cpu")
    with pytest.raises(quant.QuantizationError, match="calibration set is empty"):
        trtb.CalibrationFeed([], device="cpu")


def test_calibrator_delegates_to_the_feed():
    class Base:  # stands in for trt.IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator
        def __init__(self):
            self.base_called = True

    fake_trt = types.SimpleNamespace(IInt8EntropyCalibrator2=type("Entropy", (Base,), {}),
                                     IInt8MinMaxCalibrator=type("MinMax", (Base,), {}))
    feed = trtb.CalibrationFeed([torch.zeros(4, 3, 32, 32)], device="cpu")
    cal = trtb.make_calibrator(fake_trt, feed, "histogram")
    assert isinstance(cal, fake_trt.IInt8EntropyCalibrator2) and cal.base_called
    assert isinstance(trtb.make_calibrator(fake_trt, feed, "minmax"), fake_trt.IInt8MinMaxCalibrator)
    assert cal.get_batch_size() == 4 and cal.get_batch(["input"]) == [feed.batches[0].data_ptr()]
    assert cal.get_batch(["input"]) is None


def test_int8_engine_build_sets_the_flag_the_calibration_profile_and_the_calibrator(tmp_path):
    trt = mock.MagicMock()
    trt.IInt8EntropyCalibrator2, trt.IInt8MinMaxCalibrator = type("Entropy", (), {}), type("MinMax", (), {})
    builder = trt.Builder.return_value
    builder.build_serialized_network.return_value = b"engine"
    trt.OnnxParser.return_value.parse.return_value = True
    cfg = builder.create_builder_config.return_value
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"graph")
    feed = trtb.CalibrationFeed([torch.zeros(16, 3, 32, 32)] * 2, device="cpu")
    shapes = {"input": ((1, 3, 32, 32), (64, 3, 32, 32), (64, 3, 32, 32))}
    assert trtb.build_engine(trt, onnx_file, "int8", shapes, feed, "minmax") == b"engine"
    cfg.set_flag.assert_called_once_with(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile.return_value
    profile.set_shape.assert_any_call("input", *shapes["input"])
    profile.set_shape.assert_any_call("input", (16, 3, 32, 32), (16, 3, 32, 32), (16, 3, 32, 32))
    cfg.set_calibration_profile.assert_called_once()
    assert cfg.int8_calibrator.get_batch_size() == 16
    cfg.clear_flag.assert_called_once_with(trt.BuilderFlag.TF32)  # TensorRT's default TF32, off
    trtb.build_engine(trt, onnx_file, "fp16", shapes)
    cfg.set_flag.assert_called_with(trt.BuilderFlag.FP16)
    with pytest.raises(quant.QuantizationError, match="calibration set is empty"):
        trtb.build_engine(trt, onnx_file, "int8", shapes, None)
    builder.build_serialized_network.return_value = None
    with pytest.raises(quant.QuantizationError, match="could not build a fp16 engine for vgg16"):
        trtb.build_engine(trt, onnx_file, "fp16", shapes, name="vgg16")
    trt.OnnxParser.return_value.parse.return_value = False
    trt.OnnxParser.return_value.num_errors = 1
    trt.OnnxParser.return_value.get_error.return_value = "Unsupported op FFT"
    with pytest.raises(quant.QuantizationError, match="cannot parse the ONNX graph of vgg16: Unsupported op FFT"):
        trtb.build_engine(trt, onnx_file, "fp16", shapes, name="vgg16")


@needs_onnx
def test_tensorrt_backend_wires_export_profile_and_calibration_into_the_build(monkeypatch, trained_tiny):
    import contextlib

    trt = mock.MagicMock(__version__="10.fake")
    trt.IInt8EntropyCalibrator2, trt.IInt8MinMaxCalibrator = type("Entropy", (), {}), type("MinMax", (), {})
    trt.Builder.return_value.build_serialized_network.return_value = b"engine"
    trt.OnnxParser.return_value.parse.return_value = True
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trtb, "tensorrt_problem", lambda: None)  # no GPU here: pretend, and stay on the CPU
    monkeypatch.setattr(trtb.TensorRTBackend, "skip_reason", lambda self, precision, device: None)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    assert quant.select_backend("auto", "cpu")[0] == "tensorrt"
    calib = [colour_data(8, seed=s)[0] for s in range(3)]
    dep = quant.quantize(trained_tiny, "int8", calib, device="cpu", batch_size=32, name="tiny")
    assert (dep.backend, dep.calibration_images, dep.details["engine_bytes"]) == ("tensorrt", 24, 6)
    assert "TensorRT 10.fake engine, int8, entropy calibrator, batch 1..32" == dep.kernel_path
    profile = trt.Builder.return_value.create_optimization_profile.return_value
    profile.set_shape.assert_any_call("input", (1, 3, 32, 32), (32, 3, 32, 32), (32, 3, 32, 32))
    trt.Runtime.return_value.deserialize_cuda_engine.assert_called_once_with(b"engine")
    assert (dep.module.inp.name, dep.module.out.shape) == ("input", (-1, 4))


class FakeContext:
    """Records what execute() binds; the engine's output shape is given."""

    def __init__(self, out_shape=None, ok=True):
        self.shapes, self.addresses, self.out_shape, self.ok = {}, {}, out_shape, ok

    def set_input_shape(self, name, shape):
        self.shapes[name] = shape

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def get_tensor_shape(self, name):
        return self.out_shape or (self.shapes["input"][0], 100)

    def execute_async_v3(self, stream):
        self.stream = stream
        return self.ok


def test_execute_binds_the_input_and_a_torch_output_buffer_of_the_spec_shape():
    inp = trtb.TensorSpec("input", (-1, 3, 32, 32), torch.float32, True)
    out = trtb.TensorSpec("logits", (-1, 100), torch.float32, False)
    x = torch.randn(5, 3, 32, 32)
    ctx = FakeContext()
    y = trtb.execute(ctx, inp, out, x, stream_handle=0)
    assert ctx.shapes == {"input": (5, 3, 32, 32)} and ctx.addresses["input"] == x.data_ptr()
    assert y.shape == (5, 100) and ctx.addresses["logits"] == y.data_ptr() and ctx.stream == 0
    with pytest.raises(RuntimeError, match=r"shape \(5, 10\), the ONNX spec says \(5, 100\)"):
        trtb.execute(FakeContext(out_shape=(5, 10)), inp, out, x, 0)
    with pytest.raises(RuntimeError, match="failed to enqueue"):
        trtb.execute(FakeContext(ok=False), inp, out, x, 0)
    with pytest.raises(quant.QuantizationError, match="takes torch.float32"):
        trtb.execute(FakeContext(), inp, out, x.half(), 0)


# --- a stored run --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ctx():
    cfg = config.resolve("quantization", profile="smoke", models=["resnet8"], train_size=64, test_size=64,
                         batch_size=32, iec_batch_size=16, iec_min_seconds=0.05, calib_images=32)
    return experiments.prepare(cfg)


def test_run_quantized_writes_a_complete_run_with_explicit_tec_and_is_then_a_cache_hit(ctx, monkeypatch):
    res = quant.run_quantized(ctx, "resnet8", "int8", seed=0, progress=False)
    folder = ctx.store.root / res["run_id"]
    for name in ("config.json", "environment.json", "metrics.json", "result.json", "kernels.json",
                 "stages/calibration.json", "stages/inference.json"):
        assert (folder / name).exists(), name
    c, m = res["config"], res["metrics"]
    assert (c["kind"], c["precision"], c["backend"], c["deploy_device"]) == ("quantization", "int8", "pytorch", "cpu")
    base = ctx.store.root / c["base_run_id"]
    assert (base / "result.json").exists() and c["base_epochs"] == ctx.cfg.base_epochs
    base_res = experiments.run_baseline(experiments.Context(
        config.resolve("baselines", profile="smoke", models=["resnet8"], train_size=64, test_size=64, batch_size=32,
                       iec_batch_size=16, iec_min_seconds=0.05), ctx.device, ctx.dataset, ctx.store,
        ctx.environment), "resnet8", 0, progress=False)
    assert base_res["run_id"] == c["base_run_id"]  # the run notebook 01 stores
    assert m["tec_base_wh"] == base_res["stages"]["base_training"]["energy_wh"]
    assert m["tec_calibration_wh"] == res["stages"]["calibration"]["energy_wh"] > 0
    assert m["tec_wh"] == pytest.approx(m["tec_base_wh"] + m["tec_calibration_wh"])
    assert m["calibration_images_used"] == 32 and "quantized::conv2d" in m["int8_kernels"]
    assert 0 <= m["acc"] <= 1 and m["iec_wh"] > 0 and m["latency_ms"] > 0 and m["estimated"]
    assert m["params"] == 83892 and m["flops_per_image"] > 0 and "tensorrt" in m["backend_reason"]
    assert c["tf32"] is False and m["iec_stack"] == "PyTorch int8, batch 16, TF32 off"
    assert res["stages"]["inference"]["tf32"] is False and res["stages"]["inference"]["backend"] == "pytorch"

    def boom(*a, **k):
        raise AssertionError("a cached run was recomputed")

    monkeypatch.setattr(quant.runs, "quantize", boom)
    monkeypatch.setattr(experiments, "base_model", boom)
    assert quant.run_quantized(ctx, "resnet8", "int8", seed=0, progress=False) == res


def test_fp32_run_has_a_traced_calibration_stage_and_stored_runs_select_both(ctx):
    res = quant.run_quantized(ctx, "resnet8", "fp32", seed=0, progress=False)
    assert res["config"]["calib_images"] == 0 and res["metrics"]["calibration_images_used"] == 0
    assert "calibration" in res["stages"] and res["metrics"]["int8_kernels"] == ""
    quant.run_quantized(ctx, "resnet8", "int8", seed=0, progress=False)
    runs = quant.stored_runs(ctx.cfg)
    assert sorted(runs["precision"]) == ["fp32", "int8"]
    stacks = quant.tables.summary(runs).set_index("precision")["iec_stack"]
    assert stacks["fp32"] == "PyTorch fp32, batch 16, TF32 off" and stacks["int8"] == "PyTorch int8, batch 16, TF32 off"
    other = config.resolve("quantization", **(ctx.cfg.to_dict() | {"calib_images": 16}))
    assert list(quant.stored_runs(other)["precision"]) == ["fp32"]  # int8 with other calibration: another run


def test_runs_stored_before_the_tf32_policy_are_left_out_with_a_warning(ctx, monkeypatch):
    res = quant.run_quantized(ctx, "resnet8", "fp32", seed=0, progress=False)
    rows = quant.runs.load_runs(ctx.cfg.profile)
    old = rows[rows.run_id == res["run_id"]].drop(columns="tf32")  # what a run stored before the policy holds
    monkeypatch.setattr(quant.runs, "load_runs", lambda *a, **k: old)
    with pytest.warns(UserWarning, match="1 stored quantization run.*predate the TF32 policy"):
        assert quant.stored_runs(ctx.cfg).empty


@gpu
@needs_cuda
def test_gpu_notebook_measures_fp16_on_the_gpu_and_int8_on_the_cpu():
    cfg = config.resolve("quantization", profile="smoke", device="cuda", models=["resnet8"], train_size=64,
                         test_size=64, batch_size=32, iec_batch_size=16, iec_min_seconds=0.2, calib_images=32)
    gctx = experiments.prepare(cfg)
    fp16 = quant.run_quantized(gctx, "resnet8", "fp16", seed=0, progress=False)
    assert fp16["config"]["deploy_device"] == "cuda" and "cuDNN" in fp16["metrics"]["kernel_path"]
    assert "cpu" not in fp16["metrics"]["energy_measured_by"]
    int8 = quant.run_quantized(gctx, "resnet8", "int8", seed=0, progress=False)
    assert int8["config"]["deploy_device"] == "cpu" and int8["config"]["hardware"] != "cpu"
    assert "cpu" in int8["stages"]["inference"]["energy_source"] and int8["metrics"]["int8_kernels"]
    fp32 = quant.run_quantized(gctx, "resnet8", "fp32", seed=0, progress=False)
    assert fp32["metrics"]["iec_stack"] == "PyTorch fp32, batch 16, TF32 off" and "TF32 off" in fp32["metrics"]["kernel_path"]
    tf32 = quant.run_quantized(gctx, "resnet8", "tf32", seed=0, progress=False)
    assert tf32["config"]["tf32"] is True and tf32["metrics"]["iec_stack"] == "PyTorch tf32, batch 16, TF32 on"
    assert tf32["run_id"] != fp32["run_id"]


def test_paper_rows_find_the_papers_vgg16_under_its_zoo_name():
    # the paper's VGG16 is NNI's (nni-vgg16); a lower-cased "vgg16" would name RepDistiller's and find nothing
    from greenlib.quantize import tables

    rows = tables.paper_rows(["nni-vgg16"])
    assert set(rows["precision"]) == {"fp32", "fp16", "int8"}
    assert tables.paper_rows(["vgg16"]).empty

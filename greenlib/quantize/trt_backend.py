"""The TensorRT backend (the paper's): ONNX export, an engine per precision, torch-owned buffers.

Used where ``import tensorrt`` works and a CUDA GPU is visible. TensorRT cannot be installed on
the machines this repo is developed on, so everything up to the engine build is plain code tested
on the CPU: :func:`export_onnx` (needs the ``onnx`` package), :func:`onnx_io` (names, shapes and
dtypes of the bindings), :func:`profile_shapes`, :class:`CalibrationFeed` (TensorRT's calibrator
protocol without TensorRT) and :func:`execute` (binding torch tensors to an execution context).
Only :func:`build_engine`, :func:`make_calibrator` and :class:`TensorRTModule` touch ``tensorrt``
(10.x API: explicit batch, ``execute_async_v3``). No pycuda: device memory is torch's.

INT8 uses TensorRT's implicit quantization with an entropy (``histogram``) or min-max calibrator,
symmetric per-tensor activation scales, and fp32 fallback for layers without an int8 kernel.
"""
from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .base import Deployable, QuantizationError

INPUT_NAME, OUTPUT_NAME = "input", "logits"
ONNX_OPSET = 17
WORKSPACE_BYTES = 1 << 30

# ONNX TensorProto element types -> torch dtypes (the ones a classifier's bindings use)
_ONNX_DTYPES: dict[int, torch.dtype] = {1: torch.float32, 10: torch.float16, 16: torch.bfloat16, 6: torch.int32,
                                        7: torch.int64, 3: torch.int8}


def tensorrt_problem() -> str | None:
    """Why the TensorRT backend cannot run here (import error, no GPU, no onnx), or None."""
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # an installed but broken TensorRT raises more than ImportError
        return f"tensorrt is not importable ({type(e).__name__}: {e})"
    if not torch.cuda.is_available():
        return "tensorrt is importable but no CUDA GPU is visible"
    try:
        import onnx  # noqa: F401
    except ImportError:
        return "tensorrt is importable but onnx is not (pip install onnx: the tensorrt extra)"
    return None


# --- ONNX ---------------------------------------------------------------------------------------
def export_onnx(model: nn.Module, path: str | Path, input_shape: Sequence[int] = (3, 32, 32),
                name: str = "model", opset: int = ONNX_OPSET) -> Path:
    """Export ``model`` (a copy, fp32, eval, on the CPU) to ONNX with a dynamic batch axis.

    Input ``input`` ``(batch, *input_shape)``, output ``logits``. Uses the TorchScript exporter
    (``dynamo=False``): it needs only ``onnx`` (the dynamo exporter also needs ``onnxscript``).
    Raises QuantizationError naming ``name`` when onnx is missing or the export fails.
    """
    try:
        import onnx
    except ImportError:
        raise QuantizationError(f"ONNX export of {name} needs the onnx package (pip install onnx; it is in "
                                "greenlib's tensorrt extra)") from None
    path = Path(path)
    module = copy.deepcopy(model).to("cpu", torch.float32).eval()
    example = torch.zeros(1, *input_shape)
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter warns that it is deprecated (dynamo is the new default); it is
            # chosen on purpose, see the docstring
            warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export",
                                    category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
            torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        onnx.checker.check_model(str(path))
    except Exception as e:  # the exporter raises many types; all mean "this model does not export"
        first = (str(e).strip().splitlines() or [""])[0]
        raise QuantizationError(f"ONNX export of {name} failed: {type(e).__name__}: {first}") from e
    return path


@dataclass(frozen=True)
class TensorSpec:
    """One engine binding: its name, shape (-1 for a dynamic axis), dtype and direction."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    is_input: bool

    def resolve(self, batch: int) -> tuple[int, ...]:
        """The shape at ``batch`` (every dynamic axis is the batch axis in these graphs)."""
        return tuple(batch if d < 0 else d for d in self.shape)


def onnx_io(path: str | Path) -> list[TensorSpec]:
    """The graph's inputs (initializers excluded) then outputs, as :class:`TensorSpec`."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}

    def spec(v, is_input: bool) -> TensorSpec:
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        if t.elem_type not in _ONNX_DTYPES:
            raise QuantizationError(f"binding {v.name!r} has ONNX element type {t.elem_type}; accepted: "
                                    f"{sorted(_ONNX_DTYPES)}")
        return TensorSpec(v.name, shape, _ONNX_DTYPES[t.elem_type], is_input)

    return ([spec(v, True) for v in graph.input if v.name not in weights] + [spec(v, False) for v in graph.output])


def profile_shapes(io: Sequence[TensorSpec], min_batch: int, opt_batch: int, max_batch: int
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """``{input name: (min, opt, max) shape}`` of an optimization profile over the batch axis."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise QuantizationError(f"batch sizes min={min_batch}, opt={opt_batch}, max={max_batch}: need "
                                "1 <= min <= opt <= max")
    return {s.name: (s.resolve(min_batch), s.resolve(opt_batch), s.resolve(max_batch)) for s in io if s.is_input}


# --- calibration --------------------------------------------------------------------------------
class CalibrationFeed:
    """TensorRT's calibrator protocol (``get_batch_size``, ``get_batch``, the cache), without TensorRT.

    Holds the batches as contiguous float32 tensors on ``device`` (kept alive while TensorRT reads
    them) and hands out one device pointer per input per call, then None. All batches must have
    one shape: TensorRT calibrates at the calibration profile's single shape.
    """

    def __init__(self, batches: Sequence[Tensor], input_name: str = INPUT_NAME, device: torch.device | str = "cuda"):
        if not batches:
            raise QuantizationError("the calibration set is empty: TensorRT int8 needs at least one batch")
        shapes = {tuple(b.shape) for b in batches}
        if len(shapes) != 1:
            raise QuantizationError(f"calibration batches have shapes {sorted(shapes)}; TensorRT needs one shape")
        self.batches = [b.to(device, torch.float32).contiguous() for b in batches]
        self.input_name = input_name
        self.shape: tuple[int, ...] = shapes.pop()
        self.index = 0
        self.cache: bytes | None = None

    def get_batch_size(self) -> int:
        return self.shape[0]

    def get_batch(self, names: Sequence[str]) -> list[int] | None:
        if self.index >= len(self.batches):
            return None
        if list(names) != [self.input_name]:
            raise QuantizationError(f"calibrator asked for bindings {list(names)}; the feed holds {self.input_name!r}")
        batch = self.batches[self.index]
        self.index += 1
        return [batch.data_ptr()]

    def read_calibration_cache(self) -> bytes | None:
        return self.cache  # None: calibrate from the batches

    def write_calibration_cache(self, cache: Any) -> None:
        self.cache = bytes(cache)

    @property
    def images(self) -> int:
        return len(self.batches) * self.shape[0]


def make_calibrator(trt: Any, feed: CalibrationFeed, calibrator: str) -> Any:
    """A TensorRT calibrator object (entropy for ``histogram``, min-max for ``minmax``) over ``feed``."""
    base = {"histogram": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}[calibrator]

    class _Calibrator(base):
        def __init__(self):
            base.__init__(self)  # TensorRT's bindings need the base constructor called explicitly

        def get_batch_size(self):
            return feed.get_batch_size()

        def get_batch(self, names):
            return feed.get_batch(names)

        def read_calibration_cache(self):
            return feed.read_calibration_cache()

        def write_calibration_cache(self, cache):
            feed.write_calibration_cache(cache)

    return _Calibrator()


# --- engine -------------------------------------------------------------------------------------
def build_engine(trt: Any, onnx_path: str | Path, precision: str,
                 shapes: dict[str, tuple[tuple[int, ...], ...]], feed: CalibrationFeed | None = None,
                 calibrator: str = "histogram", name: str = "model") -> bytes:
    """A serialized engine for ``precision`` (fp32/tf32/fp16/bf16/int8) from the ONNX file; TF32 is
    cleared from the builder except for ``tf32``.

    Raises QuantizationError naming ``name`` if the parser rejects the graph or the build fails.
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise QuantizationError(f"TensorRT cannot parse the ONNX graph of {name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    for binding, (lo, opt, hi) in shapes.items():
        profile.set_shape(binding, lo, opt, hi)
    config.add_optimization_profile(profile)
    # TensorRT enables TF32 by default; the stack policy (greenlib.inference.precision_stack) keeps it
    # for the "tf32" precision only, also for the fp32 fallback layers of fp16/bf16/int8 engines
    if precision == "tf32":
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    elif precision == "int8":
        if feed is None:
            raise QuantizationError("the calibration set is empty: TensorRT int8 needs a CalibrationFeed")
        config.set_flag(trt.BuilderFlag.INT8)
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(feed.input_name, feed.shape, feed.shape, feed.shape)
        config.set_calibration_profile(calib_profile)
        config.int8_calibrator = make_calibrator(trt, feed, calibrator)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise QuantizationError(f"TensorRT could not build a {precision} engine for {name} (see its log above)")
    return bytes(serialized)


def execute(context: Any, inp: TensorSpec, out: TensorSpec, x: Tensor, stream_handle: int) -> Tensor:
    """Run one batch: bind ``x`` and a fresh torch output buffer to ``context``, enqueue on the stream.

    Raises RuntimeError if the engine's output shape disagrees with the ONNX spec (a buffer of the
    wrong size would be written past its end) or if TensorRT refuses to enqueue.
    """
    x = x.contiguous()
    if x.dtype != inp.dtype:
        raise QuantizationError(f"input dtype {x.dtype}; the engine's {inp.name!r} takes {inp.dtype}")
    context.set_input_shape(inp.name, tuple(x.shape))
    context.set_tensor_address(inp.name, x.data_ptr())
    want = out.resolve(x.shape[0])
    got = tuple(context.get_tensor_shape(out.name))
    if got != want:
        raise RuntimeError(f"engine output {out.name!r} has shape {got}, the ONNX spec says {want}")
    y = torch.empty(want, dtype=out.dtype, device=x.device)
    context.set_tensor_address(out.name, y.data_ptr())
    if not context.execute_async_v3(stream_handle):
        raise RuntimeError(f"TensorRT failed to enqueue a batch of shape {tuple(x.shape)}")
    return y


class TensorRTModule(nn.Module):
    """A deserialized engine as a module: ``forward(x)`` on torch's current CUDA stream."""

    def __init__(self, trt: Any, engine_bytes: bytes, io: Sequence[TensorSpec], device: torch.device):
        super().__init__()
        inputs, outputs = [s for s in io if s.is_input], [s for s in io if not s.is_input]
        if len(inputs) != 1 or len(outputs) != 1:
            raise QuantizationError(f"engine has {len(inputs)} inputs and {len(outputs)} outputs; expected 1 and 1")
        self.inp, self.out, self.device = inputs[0], outputs[0], device
        with torch.cuda.device(device):
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            self.context = self.engine.create_execution_context()
        self.engine_bytes = len(engine_bytes)

    def forward(self, x: Tensor) -> Tensor:
        return execute(self.context, self.inp, self.out, x, torch.cuda.current_stream(x.device).cuda_stream)


class TensorRTBackend:
    """Every precision through a TensorRT engine on the GPU (fp32 fallback inside int8 engines)."""

    name = "tensorrt"

    def unavailable(self) -> str | None:
        return tensorrt_problem()

    def deploy_device(self, precision: str, device: torch.device | str) -> torch.device:
        return torch.device(device)

    def skip_reason(self, precision: str, device: torch.device | str) -> str | None:
        problem = self.unavailable()
        if problem:
            return problem
        if torch.device(device).type != "cuda":
            return f"TensorRT runs on a CUDA GPU; device is {device}"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"{torch.cuda.get_device_name(device)} has no bf16 support"
        return None

    def quantize(self, model: nn.Module, precision: str, calib: Sequence[Tensor], *, device: torch.device,
                 calibrator: str, batch_size: int, name: str) -> Deployable:
        import tensorrt as trt

        reason = self.skip_reason(precision, device)
        if reason:
            raise QuantizationError(f"{name} {precision} on TensorRT: {reason}")
        device = torch.device(device)
        input_shape = tuple(calib[0].shape[1:]) if calib else (3, 32, 32)
        with tempfile.TemporaryDirectory(prefix="greenlib-onnx-") as tmp:
            path = export_onnx(model, Path(tmp) / f"{name}.onnx", input_shape, name=name)
            io = onnx_io(path)
            feed = CalibrationFeed(calib, device=device) if precision == "int8" else None
            engine = build_engine(trt, path, precision, profile_shapes(io, 1, batch_size, batch_size), feed,
                                  calibrator, name)
        module = TensorRTModule(trt, engine, io, device)
        calibrated = feed.images if feed else 0
        how = f", {'entropy' if calibrator == 'histogram' else 'min-max'} calibrator" if feed else ""
        path_txt = f"TensorRT {trt.__version__} engine, {precision}{how}, batch 1..{batch_size}"
        return Deployable(module, backend=self.name, precision=precision, device=device, input_dtype=torch.float32,
                          kernel_path=path_txt, calibration_images=calibrated,
                          details={"engine_bytes": module.engine_bytes, "tensorrt": trt.__version__})

"""The PyTorch backend: always available.

- ``fp32`` / ``tf32`` / ``fp16`` / ``bf16``: the model cast to that dtype (tf32: float32), eager, on
  the requested device (cuDNN convolutions on a GPU; fp32 with TF32 off, tf32 with it on, see
  :func:`greenlib.inference.precision_stack`). Measured runs take tf32, fp16 and bf16 on a CUDA GPU
  only.
- ``int8``: torch.ao.quantization FX post-training static quantization with the ``x86`` engine
  (``fbgemm`` where x86 is missing): per-channel symmetric int8 weights, per-tensor uint8
  activations whose range comes from the calibration batches. The converted model runs
  ``quantized::conv2d`` / ``quantized::conv2d_relu`` / ``quantized::linear`` (FBGEMM / oneDNN int8
  kernels) **on the CPU**: torch has no int8 convolution kernel for CUDA, so this is the only INT8
  path of this stack that really executes int8 arithmetic, and it deploys on the CPU whatever
  device the model came from.
"""
from __future__ import annotations

import copy
import warnings
from typing import Sequence

import torch
from torch import Tensor, nn

from .base import DTYPES, Deployable, QuantizationError

INT8_ENGINES: tuple[str, ...] = ("x86", "fbgemm")  # torch's int8 CPU engines for servers, preferred first


def int8_engine() -> str | None:
    """The quantized engine int8 uses here, or None if torch has none of :data:`INT8_ENGINES`."""
    return next((e for e in INT8_ENGINES if e in torch.backends.quantized.supported_engines), None)


def _fx_api():
    """``(prepare_fx, convert_fx, ao)`` or raise QuantizationError saying why int8 cannot run."""
    try:
        import torch.ao.quantization as ao
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError as e:
        raise QuantizationError(f"int8 needs torch.ao.quantization's FX API, missing in torch {torch.__version__} "
                                f"({e})") from None
    return prepare_fx, convert_fx, ao


class _QuietAO(warnings.catch_warnings):
    """torch.ao.quantization warns on every call that it, ``reduce_range`` and quantized tensor
    types are deprecated in favour of torchao (not a dependency here); docs/quantization.md says
    so once instead of every notebook cell."""

    def __enter__(self):
        out = super().__enter__()
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"Please use quant_min and quant_max", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        return out


class PyTorchBackend:
    """Casts for fp32/fp16/bf16 on the requested device; FX static int8 on the CPU."""

    name = "pytorch"

    def unavailable(self) -> str | None:
        return None

    def deploy_device(self, precision: str, device: torch.device | str) -> torch.device:
        """int8 runs on the CPU (the only int8 convolution kernels torch has); the rest where asked."""
        return torch.device("cpu") if precision == "int8" else torch.device(device)

    def skip_reason(self, precision: str, device: torch.device | str) -> str | None:
        """Why a *measured* run of ``precision`` would not be meaningful here, or None."""
        dev = self.deploy_device(precision, device)
        if precision in ("tf32", "fp16", "bf16"):
            if dev.type != "cuda":
                return (f"{precision} is measured on a CUDA GPU only (its point is tensor-core inference; torch's "
                        f"CPU {precision} kernels are not what a deployment would use) and device is {dev}")
            if precision == "bf16" and not torch.cuda.is_bf16_supported():
                return f"{torch.cuda.get_device_name(dev)} has no bf16 support"
        if precision == "int8":
            try:
                _fx_api()
            except QuantizationError as e:
                return str(e)
            if int8_engine() is None:
                return (f"torch has no int8 CPU engine among {', '.join(INT8_ENGINES)} (supported: "
                        f"{', '.join(torch.backends.quantized.supported_engines)})")
        return None

    def quantize(self, model: nn.Module, precision: str, calib: Sequence[Tensor], *, device: torch.device,
                 calibrator: str, batch_size: int, name: str) -> Deployable:
        if precision == "int8":
            return self._int8(model, calib, calibrator, name)
        dev = self.deploy_device(precision, device)
        dtype = DTYPES[precision]
        module = copy.deepcopy(model).to(dev, dtype).eval()
        if dev.type == "cuda":
            cudnn = torch.backends.cudnn.version()
            path = f"torch {torch.__version__} eager, cuDNN {cudnn} convolutions in {precision}"
            # the deployable runs under greenlib.inference.precision_stack: TF32 only for "tf32"
            path = (f"torch {torch.__version__} eager, cuDNN {cudnn} convolutions in fp32, TF32 tensor cores"
                    if precision == "tf32" else path + (", TF32 off" if precision == "fp32" else ""))
        else:
            path = f"torch {torch.__version__} eager, CPU (oneDNN/ATen) convolutions in {precision}"
        return Deployable(module, backend=self.name, precision=precision, device=dev, input_dtype=dtype,
                          kernel_path=path)

    def _int8(self, model: nn.Module, calib: Sequence[Tensor], calibrator: str, name: str) -> Deployable:
        prepare_fx, convert_fx, ao = _fx_api()
        engine = int8_engine()
        if engine is None:
            raise QuantizationError(self.skip_reason("int8", "cpu"))
        torch.backends.quantized.engine = engine  # process-wide: prepacked weights belong to one engine
        cpu = torch.device("cpu")
        module = copy.deepcopy(model).to(cpu).eval()
        with _QuietAO():
            mapping = ao.get_default_qconfig_mapping(engine)  # histogram activations, per-channel weights
            if calibrator == "minmax":
                default = ao.get_default_qconfig(engine)
                reduce_range = default.activation().reduce_range
                mapping.set_global(ao.QConfig(activation=ao.MinMaxObserver.with_args(reduce_range=reduce_range),
                                              weight=default.weight))
            try:
                prepared = prepare_fx(module, mapping, example_inputs=(calib[0][:1].to(cpu),))
            except Exception as e:  # torch.fx raises many types for code it cannot trace
                raise QuantizationError(f"{name}: torch.fx cannot trace the model for int8 quantization "
                                        f"({type(e).__name__}: {e})") from e
            n = 0
            with torch.no_grad():
                for x in calib:
                    prepared(x.to(cpu, torch.float32))
                    n += x.shape[0]
            quantized = convert_fx(prepared)
        observer = "MinMaxObserver" if calibrator == "minmax" else "HistogramObserver"
        path = (f"torch.ao.quantization FX static PTQ, '{engine}' engine: quantized::conv2d/linear int8 kernels "
                f"(FBGEMM/oneDNN) on the CPU, {torch.get_num_threads()} threads")
        return Deployable(quantized, backend=self.name, precision="int8", device=cpu, input_dtype=torch.float32,
                          kernel_path=path, calibration_images=n,
                          details={"quantized_engine": engine, "activation_observer": observer,
                                   "weights": "int8 per-channel symmetric", "activations": "uint8 per-tensor affine",
                                   "cpu_threads": torch.get_num_threads()})

"""Post-training quantization (the paper's Section 4, Table 3's "Quantization VGG16 FP16/INT8").

Two backends behind one interface, picked automatically and recorded with every result:

- ``tensorrt`` (where ``import tensorrt`` works and a GPU is visible; the paper's): ONNX export,
  an engine per precision, INT8 calibrated with an entropy or min-max calibrator
  (``trt_backend.py``);
- ``pytorch`` (always): fp32/fp16/bf16 casts run by cuDNN on the GPU; int8 through
  torch.ao.quantization FX static quantization, whose int8 kernels (FBGEMM/oneDNN) run on the
  **CPU**: torch has no int8 convolution for CUDA (``torch_backend.py``).

::

    dep = quantize(model, "int8", calibration_batches(ds.train_x, ds.mean, ds.std, 1024, 128, "cpu"))
    logits = infer(dep, images)
    run_quantized(ctx, "nni-vgg16", "int8", seed=0)   # a cached run: TEC = base training + calibration

See docs/quantization.md for what runs where and how TEC is counted.
"""
from .api import (BACKEND_REQUESTS, BACKENDS, INT8_KERNEL, Variant, infer, kernel_evidence, plan, quantize,
                  require_int8, select_backend, variant)
from .base import (CALIBRATED, CALIBRATORS, PRECISIONS, Deployable, QuantizationError, calibration_batches,
                   check_precision)
from .runs import STAGE, quantization_config, run_quantized, run_variant, stored_runs
from . import tables

__all__ = [
    "BACKENDS", "BACKEND_REQUESTS", "CALIBRATED", "CALIBRATORS", "INT8_KERNEL", "PRECISIONS", "STAGE",
    "Deployable", "QuantizationError", "Variant", "calibration_batches", "check_precision",
    "infer", "kernel_evidence", "plan", "quantization_config", "quantize", "require_int8", "run_quantized",
    "run_variant", "select_backend", "stored_runs", "tables", "variant",
]

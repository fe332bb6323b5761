"""Profiles and notebook parameters: the one place that says what `smoke`, `quick` and `paper` mean.

A notebook's ``parameters`` cell holds flat literals (``epochs: int | None = None``); ``None``
means "the profile's value". The next cell calls :func:`resolve`, which rejects unknown names,
wrong types and out-of-range values with a one-line message, and fills ``None`` from the profile::

    cfg = config.resolve("baselines", profile=profile, epochs=epochs, models=models)
    cfg.epochs        # an int, whatever the profile

To add a notebook: add its section to ``SECTIONS`` (name -> Param) and its per-profile values to
``PROFILE_VALUES``. To change what a profile means: edit ``PROFILE_VALUES`` only.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

PROFILES: tuple[str, ...] = ("smoke", "quick", "paper")
"""smoke: CPU, tiny (what CI runs). quick: one GPU, minutes per notebook (what we measure and
commit). paper: the paper's epochs and grid (GPU-days)."""


class ConfigError(ValueError):
    """A bad profile or notebook parameter. The message is one line naming the value."""


@dataclass(frozen=True)
class Param:
    """One notebook parameter: its type, a help line and the values it accepts."""

    type: type
    help: str
    choices: tuple | None = None  # accepted values (for a list: accepted items)
    min: float | None = None  # inclusive lower bound (numbers)
    max: float | None = None  # inclusive upper bound (numbers)
    min_exclusive: bool = False  # lower bound is exclusive (e.g. > 0)


# Names the zoo builds; kept in sync with greenlib.models.MODELS by a test.
ZOO_NAMES: tuple[str, ...] = (
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
    "nni-vgg16", "nni-vgg19",
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4",
    "wrn-16-1", "wrn-16-2", "wrn-40-1", "wrn-40-2",
    "resnet18", "resnet34", "resnet50",
    "mobilenetv2", "shufflenetv1", "shufflenetv2",
)
# Distillers (RepDistiller's names); kept in sync with greenlib.distill's registry by a test.
DISTILLERS: tuple[str, ...] = ("KD", "FitNet", "AT", "SP", "CC", "VID", "RKD", "PKT", "AB", "FT", "FSP", "NST", "CRD")
# Names greenlib.data loads (kept in sync by a test), and "auto": cifar100 where it is found, else
# the stand-in synthetic (the smoke profile's default; resolve() replaces it by the name it picks).
DATASETS: tuple[str, ...] = ("synthetic", "cifar100", "synthetic10", "cifar10", "cifar10-jpeg", "imagefolder", "auto")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
LOADERS: tuple[str, ...] = ("gpu", "dataloader")
SOURCES: tuple[str, ...] = ("auto", "counter", "nvml", "smi", "cpu")

# Parameters every notebook that trains or measures takes.
_COMMON: dict[str, Param] = {
    "dataset": Param(str, f"dataset, one of {', '.join(DATASETS)}; auto: cifar100 where found, else synthetic "
                     "(docs/datasets.md)", choices=DATASETS),
    "data_root": Param(str, "where the dataset archives are (a folder of archives, or one archive); "
                       "'' = $GREENLIB_DATASETS, else data/datasets/ (docs/datasets.md)"),
    "device": Param(str, "where to run: auto picks cuda when visible", choices=DEVICES),
    "train_size": Param(int, "training images per epoch (a prefix of the 50,000)", min=1, max=50_000),
    "test_size": Param(int, "test images for accuracy (a prefix of the 10,000)", min=1, max=10_000),
    "batch_size": Param(int, "training batch size", min=1),
    "loader": Param(str, "gpu: dataset and augmentation on the device; dataloader: torchvision", choices=LOADERS),
    "energy_source": Param(str, "tracer source; auto = counter where it exists", choices=SOURCES),
    "sampling_interval_s": Param(float, "tracer sampling interval in seconds", min=0.0, min_exclusive=True),
    "iec_batch_size": Param(int, "batch size of the inference-energy measurement", min=1),
    "iec_min_seconds": Param(float, "shortest traced inference window in seconds", min=0.0, min_exclusive=True),
    "seeds": Param(list, "random seeds; one run per seed"),
    "force": Param(bool, "recompute runs even if the results store holds them"),
    "redraw_only": Param(bool, "compute nothing: only redraw tables and figures from the results store"),
}

COMMON_PARAMS: tuple[str, ...] = tuple(_COMMON)
"""Parameters every training notebook shares (data, device, measurement, seeds, caching)."""

_TEACHER_EPOCHS = Param(int, "teacher training epochs (a 'teacher' run with RepDistiller's recipe, shared)", min=1)
# Every section that trains: whole-step CUDA graphs (stages that cannot be captured run eagerly and
# say so, greenlib.train.EAGER_STAGES) and the per-epoch test accuracy (not in TEC).
_GRAPH_CAPTURE = Param(bool, "capture each training step in a CUDA graph (CUDA only; eager elsewhere, recorded)")
_EVAL_EVERY = Param(int, "test accuracy after every N-th epoch, outside the traced epochs; 0: never", min=0)
TRAINING_PARAMS: tuple[str, ...] = ("graph_capture", "eval_every")
"""Training parameters a family's base model or teacher inherits from the family's section."""

SECTIONS: dict[str, dict[str, Param]] = {
    "environment": {"redraw_only": _COMMON["redraw_only"]},
    "paper_tables": {
        "taus": Param(list, "accuracy tolerances tau for Figure 6 / Table 5"),
        "mui_min": Param(float, "smallest MUI drawn", min=0.0, min_exclusive=True),
        "mui_max": Param(float, "largest MUI drawn", min=0.0, min_exclusive=True),
    },
    "baselines": {
        **_COMMON,
        "models": Param(list, "zoo models to train as baselines", choices=ZOO_NAMES),
        "epochs": Param(int, "base-training epochs", min=1),
        "lr": Param(float, "initial learning rate (SGD)", min=0.0, min_exclusive=True),
        "schedule": Param(str, "learning-rate schedule", choices=("step", "cosine")),
        "graph_capture": _GRAPH_CAPTURE,
        "eval_every": _EVAL_EVERY,
        "amp": Param(bool, "mixed precision (bf16 autocast) training; the paper used fp32"),
    },
    "quantization": {
        **_COMMON,
        "models": Param(list, "trained base models to quantize (from the baselines' runs)", choices=ZOO_NAMES),
        "base_epochs": Param(int, "base-training epochs of the models quantized", min=1),
        "precisions": Param(list, "precisions to deploy (fp32: TF32 off; tf32: fp32 with TF32 tensor cores)",
                            choices=("fp32", "tf32", "fp16", "bf16", "int8")),
        "backend": Param(str, "auto: TensorRT where importable, else PyTorch", choices=("auto", "tensorrt", "pytorch")),
        "calib_images": Param(int, "training images used to calibrate INT8", min=1, max=50_000),
        "calibrator": Param(str, "INT8 activation ranges: histogram (TensorRT entropy / torch HistogramObserver) "
                            "or minmax", choices=("histogram", "minmax")),
    },
    "pruning": {
        **_COMMON,
        "models": Param(list, "trained base models to prune (from the baselines' runs)", choices=ZOO_NAMES),
        "pruners": Param(list, "pruners (the paper's six)",
                         choices=("l1", "l2", "fpgm", "apoz", "taylor", "activation_mean")),
        "sparsity": Param(float, "fraction of filters removed per pruned layer", min=0.0, min_exclusive=True,
                          max=0.99),
        "base_epochs": Param(int, "base-training epochs of the models pruned", min=1),
        "finetune_epochs": Param(int, "fine-tuning epochs after pruning", min=1),
        "lr": Param(float, "fine-tuning learning rate", min=0.0, min_exclusive=True),
        "prune_epochs": Param(int, "training epochs of the iterative pruners' pruning stage (apoz, taylor, "
                              "activation_mean)", min=1),
        "prune_iterations": Param(int, "mask updates in that stage on the linear schedule; sparsity rises linearly "
                                  "to its target", min=1),
        "scope": Param(str, "which convs lose filters: pruned-a (NNI 2.x example's layers, Li et al.'s "
                       "VGG-16-pruned-A; every conv where it names none) or every-conv",
                       choices=("pruned-a", "every-conv")),
        "iterative_schedule": Param(str, "iterative pruners' masks: nni2 (NNI 2.x's example: one update from the first "
                                    "batch) or linear (prune_iterations updates)", choices=("nni2", "linear")),
        "short_finetune_epochs": Param(int, "the short fine-tune notebook 02 compares with finetune_epochs", min=1),
        "graph_capture": _GRAPH_CAPTURE,
        "eval_every": _EVAL_EVERY,
    },
    "sampling_rate": {
        **_COMMON,
        "model": Param(str, "zoo model trained while every power series is recorded", choices=ZOO_NAMES),
        "epochs": Param(int, "training epochs traced (the paper's Figure 5: 3)", min=1),
        "base_interval_s": Param(float, "interval of the fast NVML series the others are subsampled from",
                                 min=0.0, min_exclusive=True),
        "smi_intervals_s": Param(list, "intervals of the nvidia-smi tracers (the paper's: 0.1, 0.5, 1 s)"),
    },
    "distillation": {
        **_COMMON,
        "pairs": Param(list, "teacher:student pairs, e.g. 'resnet56:resnet20'"),
        "methods": Param(list, "distillers (RepDistiller's names)",
                         choices=DISTILLERS),
        "teacher_epochs": _TEACHER_EPOCHS,
        "student_epochs": Param(int, "distillation epochs", min=1),
        "lr": Param(float, "student learning rate (0.01 is used for MobileNetV2/ShuffleNets)", min=0.0,
                    min_exclusive=True),
        "acc_source": Param(str, "accuracy in tables and G: our measurement or the CRD paper's",
                            choices=("measured", "cited")),
        "iec_shared": Param(bool, "measure IEC once per student architecture and share it across methods"),
        "graph_capture": _GRAPH_CAPTURE,
        "eval_every": _EVAL_EVERY,
    },
    "nas": {
        **_COMMON,
        "strategies": Param(list, "one-shot NAS strategies (NNI), each on the paper's space for it",
                            choices=("darts", "proxyless")),
        "search_classes": Param(list, "search on the dataset (100) or on its CIFAR-10-shaped variant (10); "
                                "retraining always uses the dataset", choices=(100, 10)),
        "search_epochs": Param(int, "supernet search epochs", min=1),
        "darts_retrain_epochs": Param(int, "DARTS: epochs retraining the exported architecture from scratch "
                                      "(DARTS and NNI's example: 600)", min=1),
        "proxyless_retrain_epochs": Param(int, "ProxylessNAS: epochs retraining the exported architecture from "
                                          "scratch (NNI's example: 300; docs/nas.md)", min=1),
        "width": Param(int, "channels of the search space's first stage", min=4),
        "cells": Param(int, "cells of the DARTS supernet (DARTS: 8)", min=3),
        "blocks": Param(int, "most blocks per searched ProxylessNAS stage (NNI's space: 4)", min=1),
        "retrain_width": Param(int, "DARTS: first-stage channels of the retrained network (DARTS: 36)", min=4),
        "retrain_cells": Param(int, "DARTS: cells of the retrained network (DARTS: 20)", min=3),
        "lr": Param(float, "learning rate of the supernet's weights and of the retraining (SGD, cosine)",
                    min=0.0, min_exclusive=True),
        "graph_capture": _GRAPH_CAPTURE,
        "eval_every": _EVAL_EVERY,
    },
    "batch_size": {
        **_COMMON,
        "pairs": Param(list, "teacher:student pairs (the paper's Figure 4: wrn-40-2:wrn-16-2, resnet110:resnet32)"),
        "method": Param(str, "distiller whose batch-size sensitivity is measured", choices=DISTILLERS),
        "batch_sizes": Param(list, "training batch sizes (the paper's Figure 4: 32 to 1024)"),
        "teacher_epochs": _TEACHER_EPOCHS,
        "student_epochs": Param(int, "distillation epochs at every batch size", min=1),
        "lr": Param(float, "student learning rate at batch size 64 (scaled by lr_scaling)", min=0.0,
                    min_exclusive=True),
        "lr_scaling": Param(str, "fixed: the same lr at every batch size; linear: lr x batch/64",
                            choices=("fixed", "linear")),
        "graph_capture": _GRAPH_CAPTURE,
        "eval_every": _EVAL_EVERY,
    },
    "gpu_type": {
        **_COMMON,
        "pair": Param(str, "teacher:student pair of the paper's Table 4 job"),
        "method": Param(str, "distiller of the Table 4 job", choices=DISTILLERS),
        "teacher_epochs": _TEACHER_EPOCHS,
        "student_epochs": Param(int, "distillation epochs measured (Table 4 is per epoch)", min=1),
        "lr": Param(float, "student learning rate", min=0.0, min_exclusive=True),
        "graph_capture": _GRAPH_CAPTURE,
        "eval_every": _EVAL_EVERY,
    },
    "harness_overhead": {"redraw_only": _COMMON["redraw_only"]},  # notebook 13: reads data/measurements/overhead
    "analysis": {
        "redraw_only": _COMMON["redraw_only"],
        "taus": Param(list, "accuracy tolerances tau (Table 5, Figure 6, crossover tables)"),
        "tau_mui": Param(float, "MUI of G against tau (the paper's Figure 2 b: 1e9)", min=0.0, min_exclusive=True),
        "mui_min": Param(float, "smallest MUI drawn; the 'low usage' of the guidelines", min=0.0, min_exclusive=True),
        "mui_max": Param(float, "largest MUI drawn; the 'high usage' of the guidelines", min=0.0, min_exclusive=True),
        "representatives": Param(list, "one method label per family for Figure 2 (labels as greenlib.analysis "
                                 "writes them, e.g. 'vgg16 apoz'; 'quantization:best-gpu': the best measured GPU precision)"),
    },
}

# What each profile means. 'common' applies to every section that declares the name.
_COMMON_VALUES: dict[str, dict[str, Any]] = {
    "smoke": {
        "dataset": "auto", "data_root": "", "device": "cpu", "train_size": 128, "test_size": 128,
        "batch_size": 64, "loader": "gpu", "energy_source": "auto", "sampling_interval_s": 0.1,
        "iec_batch_size": 64, "iec_min_seconds": 0.3, "seeds": [0], "force": False, "redraw_only": False,
        "graph_capture": False, "eval_every": 1,  # the CPU: nothing to capture
    },
    "quick": {
        "dataset": "cifar100", "data_root": "", "device": "auto", "train_size": 50_000, "test_size": 10_000,
        "batch_size": 128, "loader": "gpu", "energy_source": "auto", "sampling_interval_s": 0.1,
        "iec_batch_size": 128, "iec_min_seconds": 5.0, "seeds": [0], "force": False, "redraw_only": False,
        "graph_capture": True, "eval_every": 1,  # whole-step CUDA graphs: no Python launch overhead in TEC
    },
    "paper": {
        "dataset": "cifar100", "data_root": "", "device": "auto", "train_size": 50_000, "test_size": 10_000,
        "batch_size": 128, "loader": "gpu", "energy_source": "auto", "sampling_interval_s": 0.1,
        "iec_batch_size": 128, "iec_min_seconds": 10.0, "seeds": [0, 1, 2], "force": False, "redraw_only": False,
        "graph_capture": True, "eval_every": 1,  # whole-step CUDA graphs: no Python launch overhead in TEC
    },
}

PROFILE_VALUES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "environment": {"redraw_only": False},
        "paper_tables": {"taus": [2, 5, 10], "mui_min": 1e6, "mui_max": 1e11},
        "baselines": {"models": ["nni-vgg16", "resnet18"], "epochs": 2, "lr": 0.05,
                      "schedule": "cosine", "amp": False},
        "quantization": {"models": ["nni-vgg16"], "base_epochs": 2, "precisions": ["fp32", "fp16", "bf16", "int8"],
                         "backend": "auto", "calib_images": 64,
                         "calibrator": "histogram"},
        "pruning": {"models": ["nni-vgg16"], "pruners": ["l1", "fpgm", "apoz"], "sparsity": 0.5, "base_epochs": 2,
                    "finetune_epochs": 2, "lr": 0.01, "prune_epochs": 1, "prune_iterations": 2,
                    "scope": "pruned-a", "iterative_schedule": "nni2", "short_finetune_epochs": 1},
        "sampling_rate": {"model": "resnet8", "epochs": 1, "base_interval_s": 0.05,
                          "smi_intervals_s": [0.1, 0.5, 1.0]},
        "distillation": {"pairs": ["resnet20:resnet8"], "methods": ["KD", "CRD"], "teacher_epochs": 1,
                         "student_epochs": 1, "lr": 0.05, "acc_source": "measured", "iec_shared": True},
        "nas": {"strategies": ["darts", "proxyless"], "search_classes": [100], "search_epochs": 1,
                "darts_retrain_epochs": 1, "proxyless_retrain_epochs": 1, "width": 4, "cells": 3, "blocks": 1, "retrain_width": 4, "retrain_cells": 3,
                "lr": 0.025, "train_size": 32, "test_size": 32, "batch_size": 16},
        "batch_size": {"pairs": ["wrn-40-2:wrn-16-2"], "method": "KD", "batch_sizes": [32, 64], "teacher_epochs": 1,
                       "student_epochs": 1, "lr": 0.05, "lr_scaling": "fixed"},
        "gpu_type": {"pair": "wrn-40-2:wrn-16-2", "method": "KD", "teacher_epochs": 1, "student_epochs": 1,
                     "lr": 0.05},
        "harness_overhead": {"redraw_only": False},
        "analysis": {"redraw_only": False, "taus": [2, 5, 10], "tau_mui": 1e9, "mui_min": 1e6, "mui_max": 1e11,
                     "representatives": ["nni-vgg16 baseline", "nni-vgg16 apoz",
                                         "quantization:best-gpu", "resnet20→resnet8 CRD", "darts"]},
    },
    "quick": {
        "environment": {"redraw_only": False},
        "paper_tables": {"taus": [2, 5, 10], "mui_min": 1e6, "mui_max": 1e11},
        "baselines": {"models": ["nni-vgg16", "nni-vgg19", "resnet18"], "epochs": 30, "lr": 0.05,
                      "schedule": "cosine", "amp": False},
        "quantization": {"models": ["nni-vgg16", "resnet18", "resnet56"], "base_epochs": 30,
                         "precisions": ["fp32", "fp16", "bf16", "int8"], "backend": "auto", "calib_images": 1024,
                         "calibrator": "histogram"},
        "pruning": {"models": ["nni-vgg16", "resnet18"],
                    "pruners": ["l1", "l2", "fpgm", "apoz", "taylor", "activation_mean"], "sparsity": 0.5,
                    "base_epochs": 30, "finetune_epochs": 10, "lr": 0.01, "prune_epochs": 1, "prune_iterations": 4,
                    "scope": "pruned-a", "iterative_schedule": "nni2", "short_finetune_epochs": 2},
        "sampling_rate": {"model": "wrn-16-2", "epochs": 3, "base_interval_s": 0.02,
                          "smi_intervals_s": [0.1, 0.5, 1.0]},
        "distillation": {"pairs": ["vgg13:vgg8", "resnet56:resnet20"],  # wrn-40-2:wrn-16-2: notebooks 10, 12
                         "methods": ["KD", "FitNet", "AT", "SP", "CC", "VID", "RKD", "PKT", "AB", "FT", "FSP", "NST",
                                     "CRD"],
                         # teachers: 'teacher' runs, RepDistiller's recipe (batch 64) over 30 epochs
                         "teacher_epochs": 30, "student_epochs": 10, "lr": 0.05, "acc_source": "measured",
                         "iec_shared": True},
        "nas": {"strategies": ["darts", "proxyless"], "search_classes": [100, 10], "search_epochs": 2,
                "darts_retrain_epochs": 15, "proxyless_retrain_epochs": 15, "width": 16, "cells": 5, "blocks": 2, "retrain_width": 16, "retrain_cells": 5,
                "lr": 0.025, "train_size": 10_000, "iec_min_seconds": 2.0},
        "batch_size": {"pairs": ["wrn-40-2:wrn-16-2", "resnet110:resnet32"], "method": "KD",
                       "batch_sizes": [32, 64, 128, 256, 512, 1024], "teacher_epochs": 2, "student_epochs": 2,
                       "lr": 0.05, "lr_scaling": "fixed", "iec_min_seconds": 2.0},
        "gpu_type": {"pair": "wrn-40-2:wrn-16-2", "method": "KD", "teacher_epochs": 2, "student_epochs": 3,
                     "lr": 0.05, "batch_size": 64, "iec_min_seconds": 2.0},
        "harness_overhead": {"redraw_only": False},
        "analysis": {"redraw_only": False, "taus": [2, 5, 10], "tau_mui": 1e9, "mui_min": 1e6, "mui_max": 1e11,
                     "representatives": ["nni-vgg16 baseline", "nni-vgg16 apoz",
                                         "quantization:best-gpu", "vgg13→vgg8 CRD", "proxyless"]},
    },
    "paper": {
        # NNI's CIFAR baselines: 160 epochs, SGD lr 0.1, step decay (x0.1 at 50% and 75%).
        "environment": {"redraw_only": False},
        "paper_tables": {"taus": [2, 5, 10], "mui_min": 1e6, "mui_max": 1e11},
        "baselines": {"models": ["nni-vgg16", "nni-vgg19", "resnet18"], "epochs": 160, "lr": 0.1,
                      "schedule": "step", "amp": False},
        # RepDistiller: 240 epochs, lr 0.05 divided by 10 at 150/180/210, batch 64 (see greenlib/distill)
        "quantization": {"models": ["nni-vgg16", "nni-vgg19", "resnet18", "resnet56"], "base_epochs": 160,
                         "precisions": ["fp32", "fp16", "bf16", "int8"], "backend": "auto", "calib_images": 1024,
                         "calibrator": "histogram"},
        "pruning": {"models": ["nni-vgg16", "nni-vgg19", "resnet18", "resnet34", "resnet50"],
                    "pruners": ["l1", "l2", "fpgm", "apoz", "taylor", "activation_mean"], "sparsity": 0.5,
                    "base_epochs": 160, "finetune_epochs": 160, "lr": 0.01, "prune_epochs": 1,
                    "prune_iterations": 4,
                    # NNI 2.x's example: pruned-A layers, one mask update from one batch; Table 3's TEC
                    # implies ~9-23 fine-tune epochs, not the text's 160 (docs/pruning.md)
                    "scope": "pruned-a", "iterative_schedule": "nni2", "short_finetune_epochs": 20},
        "sampling_rate": {"model": "wrn-16-2", "epochs": 3, "base_interval_s": 0.02,
                          "smi_intervals_s": [0.1, 0.5, 1.0]},
        "distillation": {"pairs": ["vgg13:vgg8", "resnet56:resnet20", "resnet110:resnet32", "wrn-40-2:wrn-16-2",
                                   "resnet32x4:resnet8x4"],
                         "methods": ["KD", "FitNet", "AT", "SP", "CC", "VID", "RKD", "PKT", "AB", "FT", "FSP", "NST",
                                     "CRD"],
                         "teacher_epochs": 240, "student_epochs": 240, "lr": 0.05, "acc_source": "measured",
                         "batch_size": 64, "iec_shared": False},
        # DARTS (and NNI's DARTS example): search 50 epochs at 8 cells x 16 channels, batch 64; retrain the
        # cells 600 epochs at 20 x 36. ProxylessNAS: NNI's space (at most 4 blocks per stage), the same search,
        # retrained 300 epochs (NNI's ProxylessNAS example; the paper's TEC rules out 600: docs/nas.md).
        "nas": {"strategies": ["darts", "proxyless"], "search_classes": [100, 10], "search_epochs": 50,
                "darts_retrain_epochs": 600, "proxyless_retrain_epochs": 300, "width": 16, "cells": 8, "blocks": 4, "retrain_width": 36,
                "retrain_cells": 20, "lr": 0.025, "batch_size": 64},
        "batch_size": {"pairs": ["wrn-40-2:wrn-16-2", "resnet110:resnet32"], "method": "KD",
                       "batch_sizes": [32, 64, 128, 256, 512, 1024], "teacher_epochs": 240, "student_epochs": 240,
                       "lr": 0.05, "lr_scaling": "fixed"},
        "gpu_type": {"pair": "wrn-40-2:wrn-16-2", "method": "KD", "teacher_epochs": 240, "student_epochs": 240,
                     "lr": 0.05, "batch_size": 64},
        "harness_overhead": {"redraw_only": False},
        "analysis": {"redraw_only": False, "taus": [2, 5, 10], "tau_mui": 1e9, "mui_min": 1e6, "mui_max": 1e11,
                     "representatives": ["nni-vgg16 baseline", "nni-vgg16 apoz",
                                         "quantization:best-gpu", "vgg13→vgg8 CRD", "proxyless"]},
    },
}


class Resolved(Mapping[str, Any]):
    """Validated, read-only notebook parameters; read as ``cfg.epochs`` or ``cfg["epochs"]``."""

    def __init__(self, section: str, profile: str, values: dict[str, Any]):
        self._values = MappingProxyType(dict(values, profile=profile))
        self.section = section

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r} in section {self.section!r}") from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in sorted(self._values.items()))
        return f"Resolved({self.section}: {body})"


def check_profile(profile: Any) -> str:
    """Return ``profile`` if it names a profile, else raise ConfigError naming it."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; accepted: {', '.join(PROFILES)}")
    return profile


def check_section(section: str) -> dict[str, Param]:
    if section not in SECTIONS:
        raise ConfigError(f"unknown notebook section {section!r}; accepted: {', '.join(SECTIONS)}")
    return SECTIONS[section]


def profile_defaults(section: str, profile: str) -> dict[str, Any]:
    """The values ``profile`` gives every parameter of ``section``."""
    schema = check_section(section)
    check_profile(profile)
    merged = {**_COMMON_VALUES[profile], **PROFILE_VALUES[profile].get(section, {})}
    missing = [n for n in schema if n not in merged]
    if missing:  # a programming error in this file, caught by tests
        raise KeyError(f"profile {profile!r} gives no value for {section}.{missing}")
    return {n: merged[n] for n in schema}


def check_value(section: str, name: str, value: Any) -> Any:
    """Validate one parameter value against its schema and return it (ints widened to float)."""
    schema = check_section(section)
    if name not in schema:
        known = ", ".join(sorted(schema)) or "(none)"
        raise ConfigError(f"unknown parameter {name!r} for {section}; accepted: {known}")
    p = schema[name]
    where = f"{section}.{name}"
    if p.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if p.type is list and isinstance(value, tuple):
        value = list(value)
    ok = isinstance(value, p.type) and not (p.type is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{where}={value!r} has type {type(value).__name__}; expected {p.type.__name__}")
    if p.type is float and value != value:
        raise ConfigError(f"{where}={value!r} is NaN")
    if p.choices is not None:
        items = value if p.type is list else [value]
        bad = [v for v in items if v not in p.choices]
        if bad:
            raise ConfigError(f"{where}: {bad[0]!r} is not accepted; accepted: {', '.join(map(str, p.choices))}")
    if p.min is not None and (value < p.min or (p.min_exclusive and value == p.min)):
        op = ">" if p.min_exclusive else ">="
        raise ConfigError(f"{where}={value!r} out of range; must be {op} {p.min}")
    if p.max is not None and value > p.max:
        raise ConfigError(f"{where}={value!r} out of range; must be <= {p.max}")
    if p.type is list and not value:
        raise ConfigError(f"{where}=[] is empty; give at least one value")
    return value


def resolve(section: str, profile: str = "smoke", **params: Any) -> Resolved:
    """Validate a notebook's parameters and fill those left ``None`` from ``profile``.

    Raises ConfigError (one line, naming the bad value and the accepted ones) for an unknown
    profile, section or parameter name, a wrong type or a value out of range.
    """
    check_profile(profile)
    values = profile_defaults(section, profile)
    for name, value in params.items():
        if name not in values or value is not None:  # unknown names raise in check_value
            values[name] = check_value(section, name, value)
    if values.get("dataset") == "auto":  # a run's config must name the data it ran on
        from .data import auto_dataset

        values["dataset"] = auto_dataset(values.get("data_root"))[0]
    return Resolved(section, profile, values)


def default_profile() -> str:
    """``quick`` when a CUDA GPU is visible, else ``smoke`` (what ``make reproduce`` picks)."""
    try:
        import torch

        return "quick" if torch.cuda.is_available() else "smoke"
    except ImportError:
        return "smoke"

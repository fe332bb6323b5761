"""The CIFAR model zoo, built by name; parameters and FLOPs per image.

    model = build_model("resnet20", num_classes=100)
    logits = model(x)                       # (N, 100)
    feats, logits = model.extract(x)        # features for distillation
    model_info("resnet20")                  # {"params": ..., "flops_per_image": ..., ...}

Families live one per file (``vgg``, ``resnet``, ``wrn``, ``mobilenetv2``, ``shufflenet``); the
name -> builder table is :data:`MODELS` in ``registry.py``.
"""
from .base import ZooModel
from .info import count_params, model_info
from .registry import MODELS, build_model

__all__ = ["MODELS", "ZooModel", "build_model", "count_params", "model_info"]

"""The CIFAR model zoo, built by name; parameters and FLOPs per image.

    model = build_model("resnet20", num_classes=100)
    logits = model(x)                       # (N, 100)
    feats, logits = model.extract(x)        # features for distillation
    model_info("resnet20")                  # {"params": ..., "flops_per_image": ..., ...}

Families live one per file (``vgg``, ``nni_vgg``, ``resnet``, ``wrn``, ``mobilenetv2``, ``shufflenet``);
the name -> builder table is :data:`MODELS` in ``registry.py``. ``vgg16``/``vgg19`` are RepDistiller's
VGG (distillation); ``nni-vgg16``/``nni-vgg19`` NNI's (the paper's baselines, pruning and quantization;
``nni_zoo_name("VGG16")`` maps the paper's name to it).
"""
from .base import ZooModel
from .info import count_params, model_info
from .registry import MODELS, NNI_PAPER_MODELS, build_model, nni_zoo_name

__all__ = ["MODELS", "NNI_PAPER_MODELS", "ZooModel", "build_model", "count_params", "model_info", "nni_zoo_name"]

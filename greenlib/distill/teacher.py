"""Teachers: a run kind of their own (``teacher``), trained with RepDistiller's ``train_teacher.py`` recipe.

    res = run_teacher(ctx, "resnet56", seed=0)        # cached: one run per (model, seed, recipe, data)
    model, res = teacher_model(ctx, "resnet56", 0)    # the trained teacher, frozen by the caller

The recipe (RepDistiller, ``train_teacher.py`` lines 31-40 and 54-56; ``helper/util.py`` lines 16-21):
SGD with momentum 0.9 and weight decay 5e-4, batch 64, lr 0.05 (0.01 for MobileNetV2 and the
ShuffleNets) divided by 10 after epochs 150, 180 and 210 of 240. The milestones are fractions of
``teacher_epochs`` (0.625, 0.75, 0.875), so a short profile keeps the schedule's shape. The batch
size is the recipe's, whatever the notebook's ``batch_size`` (the student's) says, so every study
that varies the student's batch (notebook 10) shares one teacher.

A teacher run is stored like a baseline (``experiments.train_and_measure``: its training stage
``teacher_training``, its accuracy and IEC) and counted in full in every student's TEC
(``tec_teacher_wh``). Its weights are not committed: where they are missing, the same config is
trained again for them and the stored measurement is kept.
"""
from __future__ import annotations

from typing import Any

import torch

from .. import experiments
from ..config import Resolved
from ..experiments import Context, hardware_name, shared_config
from ..models import build_model, model_info
from ..results import run_id
from ..train import TrainConfig, seed_everything

# RepDistiller's schedule (teacher and student alike): lr divided by 10 after epochs 150, 180 and
# 210 of 240, kept as fractions of the epochs run
MILESTONES: tuple[float, ...] = (150 / 240, 180 / 240, 210 / 240)
GAMMA = 0.1
LR = 0.05  # RepDistiller's --learning_rate (train_teacher.py and train_student.py)
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
LOW_LR_MODELS: tuple[str, ...] = ("mobilenetv2", "shufflenetv1", "shufflenetv2")
LOW_LR = 0.01  # RepDistiller's learning rate for these models, teacher or student
TEACHER_BATCH_SIZE = 64  # train_teacher.py's --batch_size
TEACHER_STAGE = "teacher_training"
KIND = "teacher"


def recipe_lr(model: str, lr: float = LR) -> float:
    """RepDistiller's rule: 0.01 for MobileNetV2 and the ShuffleNets, else ``lr``."""
    return LOW_LR if model in LOW_LR_MODELS else lr


def teacher_train_config(cfg: Resolved, model: str) -> TrainConfig:
    """RepDistiller's teacher recipe for ``cfg.teacher_epochs`` epochs (fp32), trained as the family's section
    says (``graph_capture``, ``eval_every``)."""
    return TrainConfig(epochs=cfg.teacher_epochs, lr=recipe_lr(model), momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                       schedule="step", milestones=MILESTONES, gamma=GAMMA, graph_capture=cfg.graph_capture,
                       eval_every=cfg.eval_every)


def teacher_config(cfg: Resolved, model: str, seed: int) -> dict[str, Any]:
    """A teacher run's config without hardware: the model, seed, recipe, data and measurement."""
    t = teacher_train_config(cfg, model)
    return {"kind": KIND, "model": model, "seed": seed, "epochs": t.epochs, "batch_size": TEACHER_BATCH_SIZE,
            "lr": t.lr, "schedule": t.schedule, "milestones": list(t.milestones), "gamma": t.gamma,
            "momentum": t.momentum, "weight_decay": t.weight_decay, "amp": t.amp, "graph_capture": t.graph_capture,
            "eval_every": t.eval_every, **shared_config(cfg)}


def teacher_run_id(ctx: Context, model: str, seed: int) -> str:
    """The id of the run :func:`run_teacher` gives, known before anything trains."""
    return run_id({**teacher_config(ctx.cfg, model, seed), "hardware": hardware_name(ctx.device)})


def run_teacher(ctx: Context, model: str, seed: int, progress: bool = True) -> dict[str, Any]:
    """Train teacher ``model`` with RepDistiller's recipe; cached in the store (``force`` does not redo it:
    a teacher is shared by every student, method and study that uses it)."""
    config = {**teacher_config(ctx.cfg, model, seed), "hardware": hardware_name(ctx.device)}
    run = ctx.store.open(config, environment=ctx.environment)
    if run.complete:
        return run.result
    seed_everything(seed)
    net = build_model(model, num_classes=ctx.dataset.num_classes)
    info = model_info(model, num_classes=ctx.dataset.num_classes)
    metrics = experiments.train_and_measure(ctx, run, net, seed, teacher_train_config(ctx.cfg, model),
                                            stage=TEACHER_STAGE, progress=progress, batch_size=TEACHER_BATCH_SIZE)
    return run.finish(metrics | {"params": info["params"], "flops_per_image": info["flops_per_image"],
                                 "dataset_description": ctx.dataset.description})


def teacher_model(ctx: Context, model: str, seed: int, progress: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained teacher (eval mode, on ``ctx.device``) and its stored result; trained where missing."""
    res = run_teacher(ctx, model, seed, progress=progress)
    net = experiments.stored_model(ctx, res, model, seed, teacher_train_config(ctx.cfg, model),
                                   batch_size=TEACHER_BATCH_SIZE, progress=progress)
    return net, res


def teacher_weights(ctx: Context, model: str, seed: int, progress: bool = True) -> dict[str, Any]:
    """The stored teacher run's result, its weights trained again first where they are gone (a grid's
    one job for a teacher several students need; see :func:`greenlib.experiments.baseline_weights`)."""
    return teacher_model(ctx, model, seed, progress=progress)[1]

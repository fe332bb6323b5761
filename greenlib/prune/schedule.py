"""Pruning a trained model, one-shot or iterative, to a physically smaller model: :func:`prune`.

The stage is traced in windows of ``tracer`` (their sum is the stage's energy, the paper's
"Prune Cost"):

- ``<stage>/setup``: tracing the model's graph and finding its dependency groups (:mod:`.speedup`);
- ``<stage>/masks`` (one-shot): the pruner ranks filters from the weights and masks them;
- ``<stage>/epoch<N>`` (iterative): the masked model trains for ``epochs`` epochs through NNI's
  ``TorchEvaluator`` (the trainer is :class:`greenlib.train.Trainer`, so each epoch is one window)
  while the pruner collects its statistics through the evaluator's hooks. NNI's ``LinearPruner``
  raises the sparsity to its target in ``iterations`` equal steps; at each step the pruner ranks
  the filters on the statistics of the steps since the last update and updates the masks, and
  training goes on with them (as NNI 2.x's iterative pruners did, which the paper used);
- ``<stage>/speedup``: NNI's ModelSpeedup removes the masked filters (:mod:`.speedup`).

Fine-tuning the smaller model is not part of this stage (see :mod:`.run`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import nni
import torch
from nni.compression.pruning import LinearPruner
from nni.compression.utils import TorchEvaluator
from torch import nn

from ..models import model_info
from ..train import Trainer, TrainConfig, merge_windows
from .registry import get_pruner
from .speedup import MASKS, check_sparsity, config_list, speedup_model, trace

MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4  # the SGD of NNI's pruning examples (and of greenlib.train)


@dataclass
class PruneResult:
    """What :func:`prune` returns. ``model`` is the smaller model (the one passed in, changed in
    place) in eval mode; ``summary`` is the traced stage (energy, time, windows)."""

    model: nn.Module
    masks: MASKS
    summary: dict[str, Any]
    mask_updates: int
    before: dict[str, int]  # model_info before pruning: params, flops_per_image, macs_per_image
    after: dict[str, int] = field(default_factory=dict)


class _EvaluatorTrainer(Trainer):
    """greenlib's Trainer stepping the optimizer NNI's evaluator built for the wrapped model: its
    ``step`` carries the pruner's mask updates."""

    def __init__(self, model: nn.Module, loader: Iterable, cfg: TrainConfig, device: torch.device,
                 optimizer: torch.optim.Optimizer, training_step):
        super().__init__(model, loader, cfg, device, loss_fn=lambda m, x, y: training_step((x, y), m))
        self.opt = optimizer


def _training_step(batch, model: nn.Module):
    x, y = batch
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), logits  # NNI reads the loss first


def check_iterative(loader: Iterable | None, epochs: Any, iterations: Any) -> None:
    """ValueError naming the bad argument of an iterative pruning."""
    if loader is None:
        raise ValueError("an iterative pruner needs a training loader (loader=None given)")
    for name, v in (("epochs", epochs), ("iterations", iterations)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r}: must be an int >= 1")


def prune(model: nn.Module, pruner: str, sparsity: float, tracer, example: torch.Tensor, *,
          loader: Iterable | None = None, epochs: int = 1, iterations: int = 1, lr: float = 0.01,
          stage: str = "pruning", progress: bool = True) -> PruneResult:
    """Prune ``sparsity`` of the filters of every Conv2d of ``model`` with ``pruner`` and speed it up.

    ``tracer`` is a started :class:`greenlib.tracer.Tracer`; ``example`` a batch of images on the
    model's device (for tracing the graph). Iterative pruners train on ``loader`` for ``epochs``
    epochs (SGD at constant ``lr``) with ``iterations`` mask updates; one-shot pruners ignore the
    four. Arguments are checked before anything runs: an unknown pruner, a sparsity outside (0, 1)
    or bad iterative settings raise ValueError.
    """
    spec = get_pruner(pruner)
    sparsity = check_sparsity(sparsity)
    if spec.iterative:
        check_iterative(loader, epochs, iterations)
    before = model_info(model)
    windows: list[dict[str, Any]] = []
    epochs_log: list[dict[str, Any]] = []
    with tracer.window(f"{stage}/setup"):
        graph = trace(model, example)
        cfg_list = config_list(model, sparsity, example, graph)
    windows.append(tracer.windows[f"{stage}/setup"].to_dict())

    if spec.iterative:
        steps = epochs * len(loader)
        updates = min(iterations, steps)  # at most one mask update per optimizer step
        interval = steps // updates
        trainers: list[Trainer] = []

        def training_func(wrapped, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
            t = _EvaluatorTrainer(wrapped, loader, TrainConfig(epochs=epochs, lr=lr, schedule="step", milestones=(),
                                                               momentum=MOMENTUM, weight_decay=WEIGHT_DECAY),
                                  example.device, optimizers, training_step)
            t.fit(tracer, stage, progress=progress)
            trainers.append(t)

        optimizer = nni.trace(torch.optim.SGD)(model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        evaluator = TorchEvaluator(training_func, optimizer, _training_step)
        scheduled = LinearPruner(spec.build(model, cfg_list, evaluator, training_steps=interval),
                                 interval_steps=interval, total_times=updates)
        bound = scheduled.bound_pruner
        _, masks = scheduled.compress(max_steps=updates * interval, max_epochs=epochs)
        scheduled.unwrap_model()
        if bound._remaining_times != 0:  # fewer optimizer steps than len(loader) promised: masks short of target
            raise RuntimeError(f"{spec.name}: {updates - bound._remaining_times} of {updates} mask updates were made "
                               f"in {epochs} epoch(s) of {len(loader)} steps")
        history = trainers[0].history
        windows += [h.window for h in history]
        epochs_log = [h.to_dict() for h in history]
    else:
        updates = 1
        with tracer.window(f"{stage}/masks"):
            one_shot = spec.build(model, cfg_list)
            _, masks = one_shot.compress()
            one_shot.unwrap_model()
        windows.append(tracer.windows[f"{stage}/masks"].to_dict())

    with tracer.window(f"{stage}/speedup"):
        speedup_model(model, masks, example, graph)
    windows.append(tracer.windows[f"{stage}/speedup"].to_dict())
    summary = merge_windows(stage, windows) | {
        "pruner": spec.name, "schedule": spec.schedule, "sparsity": sparsity, "mask_updates": updates,
        "windows": [w.get("name") for w in windows], "epochs": epochs_log}
    return PruneResult(model.eval(), masks, summary, updates, before, model_info(model))

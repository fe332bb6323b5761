"""Pruning a trained model, one-shot or iterative, to a physically smaller model: :func:`prune`.

The stage is traced in windows of ``tracer`` (their sum is the stage's energy, the paper's
"Prune Cost"):

- ``<stage>/setup``: tracing the model's graph and finding its dependency groups (:mod:`.speedup`);
- ``<stage>/masks`` (one-shot): the pruner ranks filters from the weights and masks them;
- ``<stage>/epoch<N>`` (iterative): the model trains for ``epochs`` epochs through NNI's
  ``TorchEvaluator`` (the trainer is :class:`greenlib.train.Trainer`, so each epoch is one window)
  while the pruner collects its statistics through the evaluator's hooks and masks the filters
  on the schedule of :data:`ITERATIVE_SCHEDULES`:

  - ``nni2`` (NNI 2.x, the paper's): one mask update at the target sparsity, ranked on the
    statistics of the first training batch (``sparsifying_training_batches=1`` in NNI's example
    ``basic_pruners_torch.py``, v2.3 line 234; its pruners ran ``num_iterations=1,
    epochs_per_iteration=1``, ``iterative_pruner.py`` v2.3 lines 540-545); training goes on with
    the masks for the rest of the ``epochs``;
  - ``linear``: NNI 3.0's ``LinearPruner`` raises the sparsity to its target in ``iterations``
    equal steps; at each step the pruner ranks the filters on the statistics of every training
    step since the last update and updates the masks, and training goes on with them;
- ``<stage>/speedup``: NNI's ModelSpeedup removes the masked filters (:mod:`.speedup`).

Fine-tuning the smaller model is not part of this stage (see :mod:`.run`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

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
NNI2_STATISTIC_BATCHES = 1  # basic_pruners_torch.py (NNI v2.3) line 234: sparsifying_training_batches = 1


@dataclass(frozen=True)
class IterativeSchedule:
    """When an iterative pruner updates its masks within its ``steps`` optimizer steps.

    ``plan(steps, iterations)`` gives ``(updates, statistic_steps, interval_steps)``: the masks are
    updated ``updates`` times, every ``interval_steps`` steps, each time from the statistics of
    the first ``statistic_steps`` steps of the interval. ``scheduled``: NNI's ``LinearPruner``
    raises the sparsity over the updates; otherwise the pruner masks at its target at once.
    """

    name: str
    description: str
    plan: Callable[[int, int], tuple[int, int, int]]
    scheduled: bool


def _linear_plan(steps: int, iterations: int) -> tuple[int, int, int]:
    updates = min(iterations, steps)  # at most one mask update per optimizer step
    return updates, steps // updates, steps // updates


ITERATIVE_SCHEDULES: Mapping[str, IterativeSchedule] = MappingProxyType({
    "nni2": IterativeSchedule("nni2", "NNI 2.x: one mask update from the first batch's statistics, then training "
                              "goes on with the masks", lambda steps, _it: (1, NNI2_STATISTIC_BATCHES, steps), False),
    "linear": IterativeSchedule("linear", "NNI 3.0 LinearPruner: `iterations` updates, sparsity rising linearly, each "
                                "from the statistics of every step since the last", _linear_plan, True),
})


def get_iterative_schedule(name: Any) -> IterativeSchedule:
    """The iterative schedule ``name``; ValueError naming it and the accepted names otherwise."""
    if not isinstance(name, str) or name not in ITERATIVE_SCHEDULES:
        raise ValueError(f"unknown iterative schedule {name!r}; accepted: {', '.join(ITERATIVE_SCHEDULES)}")
    return ITERATIVE_SCHEDULES[name]


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
          loader: Iterable | None = None, epochs: int = 1, iterations: int = 1, schedule: str = "linear",
          layers: Sequence[str] | None = None, lr: float = 0.01, stage: str = "pruning",
          progress: bool = True) -> PruneResult:
    """Prune ``sparsity`` of the filters of every Conv2d of ``model`` (or of the Conv2d named in
    ``layers``) with ``pruner`` and speed it up.

    ``tracer`` is a started :class:`greenlib.tracer.Tracer`; ``example`` a batch of images on the
    model's device (for tracing the graph). Iterative pruners train on ``loader`` for ``epochs``
    epochs (SGD at constant ``lr``) and update their masks on ``schedule`` (a name of
    :data:`ITERATIVE_SCHEDULES`; ``linear`` makes ``iterations`` updates); one-shot pruners ignore
    those five. Arguments are checked before anything runs: an unknown pruner or schedule, a
    sparsity outside (0, 1) or bad iterative settings raise ValueError.
    """
    spec = get_pruner(pruner)
    sparsity = check_sparsity(sparsity)
    if spec.iterative:
        check_iterative(loader, epochs, iterations)
        plan = get_iterative_schedule(schedule)
    before = model_info(model)
    windows: list[dict[str, Any]] = []
    epochs_log: list[dict[str, Any]] = []
    with tracer.window(f"{stage}/setup"):
        graph = trace(model, example)
        cfg_list = config_list(model, sparsity, example, graph, layers=layers)
    windows.append(tracer.windows[f"{stage}/setup"].to_dict())
    extra: dict[str, Any] = {}

    if spec.iterative:
        steps = epochs * len(loader)
        updates, statistic_steps, interval = plan.plan(steps, iterations)
        extra = {"iterative_schedule": plan.name, "statistic_steps": statistic_steps, "interval_steps": interval}
        trainers: list[Trainer] = []

        def training_func(wrapped, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
            t = _EvaluatorTrainer(wrapped, loader, TrainConfig(epochs=epochs, lr=lr, schedule="step", milestones=(),
                                                               momentum=MOMENTUM, weight_decay=WEIGHT_DECAY),
                                  example.device, optimizers, training_step)
            t.fit(tracer, stage, progress=progress)
            trainers.append(t)

        optimizer = nni.trace(torch.optim.SGD)(model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        evaluator = TorchEvaluator(training_func, optimizer, _training_step)
        bound = spec.build(model, cfg_list, evaluator, training_steps=statistic_steps)
        if plan.scheduled:
            scheduled = LinearPruner(bound, interval_steps=interval, total_times=updates)
            _, masks = scheduled.compress(max_steps=updates * interval, max_epochs=epochs)
        else:
            # the pruner alone: masks at the target after `statistic_steps` steps, then no more
            # (its interval_steps = training_steps, total_times = 1); NNI asks the evaluator for
            # `statistic_steps` steps, training_func trains the whole `epochs` regardless
            scheduled = bound
            _, masks = bound.compress()
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
        "windows": [w.get("name") for w in windows], "epochs": epochs_log, **extra}
    return PruneResult(model.eval(), masks, summary, updates, before, model_info(model))

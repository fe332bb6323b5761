"""The traced trainer: SGD with momentum and weight decay, a step or cosine schedule, fp32 by default.

Every epoch is a tracer window ``<stage>/epoch<N>``; the stage's summary is the sum of its epochs,
so a run killed mid-stage and resumed from its last checkpoint still reports the whole stage's
energy (the epochs finished before the kill are kept in the checkpoint). The checkpoint is written
after the first epoch that ends :data:`CHECKPOINT_EVERY_S` seconds or more after the last one (and
after the last epoch), not after every epoch: writing a large model's weights and optimizer state
leaves the GPU idle for a few tenths of a second, which on a graphed epoch of under two seconds cost
several points of GPU utilisation. A killed run redoes at most that much training, counted once.

Method families reuse :class:`Trainer` with their own ``loss_fn`` (distillation) or a model that
arrives already trained (pruning's fine-tuning).

``graph_capture=True`` (the quick and paper profiles) captures forward, backward and the SGD step
in one CUDA graph, replayed for every full batch: eager PyTorch at CIFAR batch sizes is launch-bound,
and a benchmark of method energy must not charge a method for Python launch overhead. The
numbers are those of the eager step (``tests/test_train_gpu.py`` and ``tests/test_graphs_gpu.py``
check the weights). Where a stage cannot be captured it runs eagerly and its record says why
(``graph_captured``, ``graph_reason``): on the CPU, or for a stage on :data:`EAGER_STAGES`. A
capture that fails elsewhere is an error naming the stage, never a silent fallback.

``eval_every=N`` evaluates the model on ``eval_loader`` after every N-th epoch (and the last), in a
tracer window of its own (``<stage>/eval<N>``) outside the epoch's: its time and energy are stored
beside the epoch (``eval_elapsed_s``, ``eval_energy_j``) and in the stage's ``eval_*`` totals, never
in the stage's energy (TEC).
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from .io import atomic_torch_save

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``loss_fn(model, x, y) -> (loss, logits)``; the default is cross-entropy on ``model(x)``."""

SCHEDULES = ("step", "cosine")


def _checkpoint_every_s() -> float:
    raw = os.environ.get("GREENLIB_CHECKPOINT_EVERY_S", "60")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise ValueError(f"GREENLIB_CHECKPOINT_EVERY_S={raw!r} is not a number of seconds >= 0")
    return value


CHECKPOINT_EVERY_S = _checkpoint_every_s()
"""Seconds of training between two checkpoints (:class:`Trainer`'s ``checkpoint_every_s``): 60, or
``$GREENLIB_CHECKPOINT_EVERY_S`` (the tests set 0, a checkpoint after every epoch, to kill runs
between epochs)."""

EAGER_STAGES: dict[str, str] = {
    "ddp": "DDP all-reduces gradients from backward hooks through NCCL; the graph would have to capture the "
           "collectives of every rank",
    "pruning statistics": "NNI's pruners collect activation and gradient statistics through Python hooks and "
                          "update masks inside the optimizer step",
    "nas search": "the one-shot supernet samples a different path each step (data-dependent control flow) in "
                  "NNI's Lightning loop",
}
"""Stages that run eagerly even where ``graph_capture=True``, and why (``graph_reason`` of their record)."""


def on_device(device: torch.device | str):
    """A context in which ``device`` is CUDA's current device (a no-op off CUDA), for a CUDA graph's
    capture: a new ``torch.cuda.Stream()`` is made on the current device, so on ``cuda:1`` with
    ``cuda:0`` current a capture fails (``operation not permitted when stream is capturing``:
    session 14's first call, an IEC window on GPU 1). The captures also pass their own capture
    stream: ``torch.cuda.graph``'s default one is made once per process, on the device current at
    its first capture (session 16: the two-GPU test failed after tests that captured on
    ``cuda:0``). A replay needs no such context: ``CUDAGraph.replay`` guards its capture's device."""
    device = torch.device(device)
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


class GraphCaptureError(RuntimeError):
    """Capturing a stage's training step in a CUDA graph failed (the message names the stage)."""


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), logits


def lr_at(epoch: int, epochs: int, lr: float, schedule: str, milestones: Sequence[float] = (0.5, 0.75),
          gamma: float = 0.1) -> float:
    """Learning rate for 0-based ``epoch`` of ``epochs``.

    ``step``: ``lr`` times ``gamma`` for each milestone (a fraction of ``epochs``) passed, as NNI's
    CIFAR baselines (0.5 and 0.75 of 160 epochs) and RepDistiller (150/180/210 of 240) do.
    ``cosine``: half-cosine from ``lr`` towards 0, evaluated at the epoch's start.
    """
    if schedule == "step":
        passed = sum(epoch >= round(m * epochs) for m in milestones)
        return lr * gamma**passed
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"unknown schedule {schedule!r}; accepted: {', '.join(SCHEDULES)}")


@dataclass
class TrainConfig:
    """What a training stage does. Validated on construction (errors name the value)."""

    epochs: int
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    amp: bool = False  # bf16 autocast; the paper trained in fp32
    graph_capture: bool = False  # capture forward+backward+step in one CUDA graph (CUDA only; eager elsewhere)
    eval_every: int = 0  # test accuracy after every N-th epoch and the last (outside the traced epoch); 0: never

    def __post_init__(self):
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r}: must be an int >= 1")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every={self.eval_every!r}: must be an int >= 0 (0: no per-epoch evaluation)")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r}: must be > 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; accepted: {', '.join(SCHEDULES)}")
        self.milestones = tuple(self.milestones)


@dataclass
class EpochRecord:
    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    images: int
    window: dict[str, Any] = field(default_factory=dict)  # the epoch's tracer summary
    graphed_steps: int = 0  # steps replayed from the CUDA graph
    eager_steps: int = 0  # steps run eagerly (all of them without capture; else a partial last batch)
    test_acc: float | None = None  # after this epoch (eval_every), None where not evaluated
    test_loss: float | None = None
    eval_elapsed_s: float | None = None  # the evaluation's own window: not in the epoch's energy
    eval_energy_j: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "lr": self.lr, "train_loss": self.train_loss, "train_acc": self.train_acc,
                "images": self.images, "graphed_steps": self.graphed_steps, "eager_steps": self.eager_steps,
                "test_acc": self.test_acc, "test_loss": self.test_loss, "eval_elapsed_s": self.eval_elapsed_s,
                "eval_energy_j": self.eval_energy_j,
                **{f"window.{k}": v for k, v in self.window.items() if not isinstance(v, dict)}}


class Trainer:
    """Train ``model`` for ``cfg.epochs`` over ``train_loader``, tracing each epoch.

    ``checkpoint`` (a path) is written atomically after the first epoch that ends
    ``checkpoint_every_s`` seconds (None: :data:`CHECKPOINT_EVERY_S`) or more after the previous
    write (0: after every epoch) and after the last epoch, and read on start, so an interrupted
    :meth:`fit` continues from there. ``wait_for_samples``: whether closing an epoch's (or an
    evaluation's) window waits for the next sample (see ``Tracer.end_window``'s ``cover``); None:
    only where the tracer has no hardware energy counter. Those waits (up to one sampling interval
    each, twice an epoch with ``eval_every=1``) idled the GPU between graphed epochs. ``extra_modules``
    are trained alongside the model (a distiller's connectors) and checkpointed with it. ``eval_loader`` is the test
    loader of ``cfg.eval_every``. ``eager`` names this stage's entry of :data:`EAGER_STAGES`
    (it runs eagerly whatever ``cfg.graph_capture`` says).
    """

    def __init__(self, model: nn.Module, train_loader: Iterable, cfg: TrainConfig, device: torch.device | str,
                 loss_fn: LossFn = cross_entropy_loss, extra_modules: Sequence[nn.Module] = (),
                 checkpoint: str | Path | None = None, eval_loader: Iterable | None = None, eager: str | None = None,
                 checkpoint_every_s: float | None = None, wait_for_samples: bool | None = None):
        self.model, self.loader, self.cfg = model, train_loader, cfg
        if checkpoint_every_s is None:
            checkpoint_every_s = CHECKPOINT_EVERY_S
        if not checkpoint_every_s >= 0:
            raise ValueError(f"checkpoint_every_s={checkpoint_every_s!r} must be a number of seconds >= 0")
        self.checkpoint_every_s = float(checkpoint_every_s)
        self.wait_for_samples = wait_for_samples
        self.device = torch.device(device)
        if eager is not None and eager not in EAGER_STAGES:
            raise ValueError(f"eager={eager!r} is not a documented eager stage; accepted: {', '.join(EAGER_STAGES)}")
        if cfg.eval_every and eval_loader is None:
            raise ValueError(f"eval_every={cfg.eval_every} needs an eval_loader (the test loader)")
        self.graph_reason = graph_reason(cfg.graph_capture, self.device, eager)
        self.graphed = self.graph_reason is None
        self.eval_loader = eval_loader
        self.loss_fn = loss_fn
        self.extra = nn.ModuleList(extra_modules)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        params = [p for p in [*model.parameters(), *self.extra.parameters()] if p.requires_grad]
        if self.graphed:
            # lr is a device tensor so a captured graph reads the current value at every replay.
            # SGD's foreach path calls .item() on a tensor lr (a sync, illegal while capturing);
            # its single-tensor path with a requires-grad lr uses addcmul_ instead, which is legal.
            lr0 = torch.tensor(cfg.lr, device=self.device, dtype=torch.float64, requires_grad=True)
            self.opt = torch.optim.SGD(params, lr=lr0, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                       foreach=False)
        else:
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.history: list[EpochRecord] = []
        self._saved_at = 0.0  # time.monotonic() of the last checkpoint (or of fit's start)
        self._graph = None
        self._stage = ""
        self._counts = {"graphed": 0, "eager": 0}

    # -- checkpointing -------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "extra": self.extra.state_dict(), "opt": self.opt.state_dict(),
                "history": [vars(h) for h in self.history], "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def _save(self) -> None:
        if self.checkpoint is not None:
            atomic_torch_save(self._state(), self.checkpoint)

    def _load(self) -> None:
        if self.checkpoint is None or not self.checkpoint.exists():
            return
        # on the CPU: the RNG states must stay CPU ByteTensors; load_state_dict moves the rest
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.extra.load_state_dict(state["extra"])
        # the graphed step reads each group's lr from its own device tensor (captured by address);
        # load_state_dict would put the saved one, a CPU tensor, in its place: keep ours, saved value
        lrs = [g["lr"] for g in self.opt.param_groups]
        self.opt.load_state_dict(state["opt"])
        for g, lr in zip(self.opt.param_groups, lrs):
            if isinstance(lr, torch.Tensor):
                with torch.no_grad():
                    lr.fill_(float(g["lr"]))
                g["lr"] = lr
        self.history = [EpochRecord(**h) for h in state["history"]]
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    # -- one step ------------------------------------------------------------------------------
    def _eager_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp):
            loss, logits = self.loss_fn(self.model, x, y)
        loss.backward()
        self.opt.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    def _counted_eager_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._counts["eager"] += 1
        return self._eager_step(x, y)

    def _graphed_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._graph is None or self._static_x.shape != x.shape:
            if self._graph is not None:
                # a batch of another size (the last, partial one): run it eagerly
                return self._counted_eager_step(x, y)
            try:
                with on_device(self.device):  # the capture's streams are the current device's
                    self._capture(x, y)
            except Exception as e:
                self._graph = None
                raise GraphCaptureError(
                    f"stage {self._stage!r}: capturing its training step in a CUDA graph failed ({type(e).__name__}: "
                    f"{e}); make the step capturable, or run it eagerly as an entry of greenlib.train.EAGER_STAGES "
                    "with its reason; restart the Python process before training on the GPU again, since a failed "
                    "capture leaves CUDA's random generator unusable in it") from e
        self._static_x.copy_(x)
        self._static_y.copy_(y)
        self._graph.replay()
        self._counts["graphed"] += 1
        return self._static_loss.clone(), self._static_correct.clone()

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        # The PyTorch recipe for whole-step capture: warm up on a side stream (this builds the
        # optimizer's momentum buffers and picks kernels), then capture one step with grads
        # allocated inside the graph. The warm-up must not train: weights, BN statistics,
        # buffers (CRD's memory bank), momentum and the CUDA RNG (CRD's negatives) are restored
        # afterwards, so a graphed run takes exactly the steps an eager run takes
        # (tests/test_train_gpu.py and tests/test_graphs_gpu.py check it).
        self._static_x, self._static_y = x.clone(), y.clone()
        modules = nn.ModuleList([self.model, self.extra])
        saved = {k: v.clone() for k, v in modules.state_dict().items()}
        saved_bufs = {id(p): s["momentum_buffer"].clone() for p, s in self.opt.state.items()
                      if s.get("momentum_buffer") is not None}
        rng = torch.cuda.get_rng_state(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._eager_step(self._static_x, self._static_y)
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.set_rng_state(rng, self.device)
        with torch.no_grad():
            for k, v in modules.state_dict().items():
                v.copy_(saved[k])
            for p, s in self.opt.state.items():
                buf = s.get("momentum_buffer")
                if buf is not None:  # an SGD buffer that is zero makes the next step equal eager's first
                    buf.copy_(saved_bufs[id(p)]) if id(p) in saved_bufs else buf.zero_()
        self._graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        # thread_local: a CUDA call from another thread (a tracer's sampler) cannot break the capture;
        # a host sync in the step itself (.item(), a boolean mask's nonzero) still fails it. The capture
        # stream is this device's own (torch's default one lives on the first capture's device)
        with torch.cuda.graph(self._graph, stream=torch.cuda.Stream(self.device),
                              capture_error_mode="thread_local"):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp):
                loss, logits = self.loss_fn(self.model, self._static_x, self._static_y)
            loss.backward()
            self.opt.step()
            self._static_loss = loss.detach()
            self._static_correct = (logits.argmax(1) == self._static_y).sum()

    def _set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            if isinstance(g["lr"], torch.Tensor):
                with torch.no_grad():
                    g["lr"].fill_(lr)
            else:
                g["lr"] = lr
    # -- the loop ------------------------------------------------------------------------------
    def fit(self, tracer, stage: str, progress: bool = True) -> dict[str, Any]:
        """Train the remaining epochs inside ``tracer`` windows; returns the stage's summary.

        ``tracer`` must be started. The summary sums the epochs' energy and time (including
        epochs finished before a resume) and lists the epochs under ``epochs``; it says whether
        the step was graphed (``graph_captured``, ``graph_reason`` where not) and holds the
        per-epoch evaluations' own time and energy (``eval_elapsed_s``, ``eval_energy_j``), which
        are not in its ``energy_j``. Raises :class:`GraphCaptureError` naming ``stage`` where a
        capture fails.
        """
        from tqdm import tqdm  # plain text: readable in executed notebooks without ipywidgets

        # on the device first: loading the optimizer puts each momentum buffer where its parameter
        # is then, and a buffer left on the CPU fails the first step of a resumed GPU run
        self.model.to(self.device).train()
        self.extra.to(self.device).train()
        self._load()
        self._stage = stage
        step = self._graphed_step if self.graphed else self._counted_eager_step
        start = len(self.history)
        self._saved_at = time.monotonic()
        bar = tqdm(range(start, self.cfg.epochs), desc=stage, initial=start, total=self.cfg.epochs,
                   disable=not progress, unit="epoch", mininterval=10.0)
        for epoch in bar:
            lr = lr_at(epoch, self.cfg.epochs, self.cfg.lr, self.cfg.schedule, self.cfg.milestones, self.cfg.gamma)
            self._set_lr(lr)
            if hasattr(self.loader, "set_epoch"):
                self.loader.set_epoch(epoch)
            loss_sum = torch.zeros((), device=self.device)
            correct = torch.zeros((), device=self.device, dtype=torch.long)
            n = 0
            self._counts = {"graphed": 0, "eager": 0}
            with tracer.window(f"{stage}/epoch{epoch}", cover=self._cover(tracer)):
                for x, y in self.loader:
                    loss, corr = step(x, y)
                    loss_sum += loss * y.shape[0]
                    correct += corr
                    n += y.shape[0]
            summary = tracer.windows[f"{stage}/epoch{epoch}"].to_dict()
            rec = EpochRecord(epoch, lr, float(loss_sum) / max(n, 1), float(correct) / max(n, 1), n, summary,
                              graphed_steps=self._counts["graphed"], eager_steps=self._counts["eager"])
            if not math.isfinite(rec.train_loss):
                raise FloatingPointError(f"{stage}: training loss is {rec.train_loss} at epoch {epoch} (lr={lr})")
            if self._evaluates(epoch):
                self._evaluate_epoch(tracer, stage, rec)
            self.history.append(rec)
            if self._checkpoint_due(epoch):
                self._save()
                self._saved_at = time.monotonic()
            bar.set_postfix(loss=f"{rec.train_loss:.3f}", acc=f"{rec.train_acc:.3f}",
                            J=f"{summary.get('energy_j', float('nan')):.0f}")
        return self.summary(stage)

    def _cover(self, tracer) -> bool:
        """``tracer.window``'s ``cover``: no wait for a closing sample where the counter gives the energy."""
        return self.wait_for_samples if self.wait_for_samples is not None else not tracer.has_counter

    def _checkpoint_due(self, epoch: int) -> bool:
        return (epoch + 1 == self.cfg.epochs
                or time.monotonic() - self._saved_at >= self.checkpoint_every_s)

    def _evaluates(self, epoch: int) -> bool:
        every = self.cfg.eval_every
        return bool(every) and ((epoch + 1) % every == 0 or epoch + 1 == self.cfg.epochs)

    def _evaluate_epoch(self, tracer, stage: str, rec: EpochRecord) -> None:
        """Test accuracy after ``rec``'s epoch, in its own window (not the epoch's: not in TEC)."""
        name = f"{stage}/eval{rec.epoch}"
        with tracer.window(name, cover=self._cover(tracer)):
            ev = evaluate(self.model, self.eval_loader, self.device)
        self.model.train()  # evaluate() left it in eval mode; a partial last batch trains eagerly
        w = tracer.windows[name].to_dict()
        rec.test_acc, rec.test_loss = ev["acc"], ev["test_loss"]
        rec.eval_elapsed_s, rec.eval_energy_j = w.get("elapsed_s"), w.get("energy_j")

    def summary(self, stage: str) -> dict[str, Any]:
        """The stage's summary over every epoch of :attr:`history` (see :meth:`fit`)."""
        evals = [h for h in self.history if h.test_acc is not None]
        eval_j = [h.eval_energy_j for h in evals]
        eval_energy_j = float(sum(eval_j)) if evals and all(j is not None for j in eval_j) else float("nan")
        return merge_windows(stage, [h.window for h in self.history]) | {
            "graph_capture": self.cfg.graph_capture, "graph_captured": self.graphed, "graph_reason": self.graph_reason,
            "graphed_steps": sum(h.graphed_steps for h in self.history),
            "eager_steps": sum(h.eager_steps for h in self.history),
            "eval_every": self.cfg.eval_every, "eval_epochs": len(evals),
            "eval_elapsed_s": float(sum(h.eval_elapsed_s or 0.0 for h in evals)),
            "eval_energy_j": eval_energy_j, "eval_energy_wh": eval_energy_j / 3600.0,
            "final_test_acc": evals[-1].test_acc if evals else None,
            "epochs": [h.to_dict() for h in self.history]}


def graph_reason(graph_capture: bool, device: torch.device, eager: str | None = None) -> str | None:
    """Why a stage runs eagerly (its record's ``graph_reason``), or None where it is captured.

    ``graph_capture=False`` (asked for), ``cpu`` (CUDA graphs need a CUDA device; a profile that
    asks for capture still runs on a CPU host), or ``eager``, an entry of :data:`EAGER_STAGES`.
    """
    if not graph_capture:
        return "graph_capture=False"
    if eager is not None:
        return eager
    if torch.device(device).type != "cuda":
        return "cpu"
    return None


def eager_stage(stage: str, reason: str) -> dict[str, Any]:
    """The ``graph_*`` entries of a stage record for a stage that never runs through :class:`Trainer`
    (NAS search, pruning's masks and speed-up): eager, for ``reason`` of :data:`EAGER_STAGES`."""
    if reason not in EAGER_STAGES:
        raise ValueError(f"{stage}: eager reason {reason!r} is not documented; accepted: {', '.join(EAGER_STAGES)}")
    return {"graph_captured": False, "graph_reason": reason}


def accuracy_curve(stages: Sequence[Mapping[str, Any]]) -> "pandas.DataFrame":
    """Test accuracy against cumulative training energy over consecutive stage summaries.

    ``stages`` are :meth:`Trainer.fit` summaries in the order they ran (a distillation's
    ``pretrain`` then ``distillation``; a stored run's ``result["stages"][name]``). One row per
    epoch: ``stage``, ``epoch``, ``test_acc`` (NaN where not evaluated), ``energy_wh`` of the
    epoch and ``cumulative_energy_wh`` / ``cumulative_elapsed_s`` of training so far (evaluation
    windows not counted), for a figure of accuracy against energy per method.
    """
    import pandas as pd

    rows = []
    for st in stages:
        for e in st.get("epochs", []):
            acc = e.get("test_acc")
            rows.append({"stage": st.get("name"), "epoch": e["epoch"],
                         "test_acc": float("nan") if acc is None else float(acc),
                         "energy_wh": e.get("window.energy_j", float("nan")) / 3600.0,
                         "elapsed_s": e.get("window.elapsed_s", float("nan"))})
    df = pd.DataFrame(rows, columns=["stage", "epoch", "test_acc", "energy_wh", "elapsed_s"])
    df["cumulative_energy_wh"] = df["energy_wh"].cumsum()
    df["cumulative_elapsed_s"] = df["elapsed_s"].cumsum()
    return df


_SUM = ("elapsed_s", "energy_j", "energy_wh", "sampled_energy_j", "counter_energy_j", "estimated_energy_j",
        "net_energy_j", "n_samples")
_UTIL = ("mean_gpu_util_pct", "mean_mem_util_pct")
_TIME_WEIGHTED = ("mean_power_w", *_UTIL)


def merge_windows(name: str, windows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One summary for consecutive windows: energies and times add, means are time-weighted.

    Energy stays NaN if any part is NaN (a stage with an unmeasured epoch has no energy).
    """
    if not windows:
        raise ValueError(f"stage {name!r} has no windows to merge")
    out: dict[str, Any] = {"name": name, "n_windows": len(windows)}
    for k in _SUM:
        vals = [w.get(k) for w in windows if w.get(k) is not None]
        out[k] = float(sum(vals)) if vals else float("nan")
    for k in _TIME_WEIGHTED:
        vals = [(w.get(k, float("nan")), w.get("elapsed_s", 0.0)) for w in windows]
        if k in _UTIL:  # a window shorter than the utilisation lag has no reading of its own: left out
            vals = [(v, t) for v, t in vals if math.isfinite(v)]
        weight = sum(t for _, t in vals)
        out[k] = sum(v * t for v, t in vals) / weight if weight > 0 else float("nan")
    if "util_lag_s" in windows[0]:
        out["util_lag_s"] = windows[0]["util_lag_s"]
    if "max_mem_used_mib" in windows[0]:
        out["max_mem_used_mib"] = max(w.get("max_mem_used_mib", float("nan")) for w in windows)
    sources = {w.get("energy_source") for w in windows}
    out["energy_source"] = sources.pop() if len(sources) == 1 else "+".join(sorted(map(str, sources)))
    out["estimated"] = any(bool(w.get("estimated")) for w in windows)
    reasons = sorted({w["reason"] for w in windows if w.get("reason")})
    out["reason"] = "; ".join(reasons) or None
    for k in ("requested_interval_s", "achieved_interval_s"):
        vals = [w[k] for w in windows if w.get(k) is not None]
        out[k] = float(sum(vals) / len(vals)) if vals else float("nan")
    return out


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str) -> dict[str, float]:
    """Top-1 accuracy (fraction) and mean cross-entropy of ``model`` in eval mode."""
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    for x, y in loader:
        logits = model(x.to(device, non_blocking=True)).float()
        y = y.to(device, non_blocking=True)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += y.shape[0]
    if n == 0:
        raise ValueError("evaluate: the test loader yielded no samples")
    return {"acc": correct / n, "test_loss": loss_sum / n, "test_images": n}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)

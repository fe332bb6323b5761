"""The traced one-shot search: NNI's strategy on a supernet, one tracer window per epoch.

    arch, summary = search(space, strategy, train_loader, val_loader, device, SearchConfig(epochs=2), tracer)

NNI's one-shot strategies drive a PyTorch Lightning trainer. It runs here, in this process, through
NNI's sequential execution engine (what ``NasExperiment`` does inside, without its experiment
manifest and logs under ``~/nni-experiments``): no NNI manager, no web UI, no Lightning logger, no
progress bar (an epoch line instead). With ``checkpoint``, Lightning's whole training state (the
supernet and its architecture parameters, the optimizers, the loop, the epochs' records) is written
there atomically after every search epoch, and a search started again resumes from it: a search
epoch at the paper's size takes minutes, a whole search hours (docs/campaign.md). The weights are
trained with the DARTS recipe: SGD momentum 0.9, weight decay 3e-4, cosine from ``lr`` to ``lr_min``.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..train import merge_windows
from .backend import import_nni, quiet


@dataclass(frozen=True)
class SearchConfig:
    """The supernet's weight training during a search (DARTS' search recipe by default)."""

    epochs: int
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4

    def __post_init__(self):
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1:
            raise ValueError(f"search epochs={self.epochs!r}: must be an int >= 1")
        if not self.lr > 0:
            raise ValueError(f"search lr={self.lr!r}: must be > 0")


def _module_class():
    from nni.nas.evaluator.pytorch.lightning import LightningModule

    class SupernetModule(LightningModule):
        """Cross-entropy on the supernet; SGD + cosine. Records the weight steps' loss and accuracy."""

        def __init__(self, cfg: SearchConfig):
            super().__init__()
            self.cfg = cfg
            self.reset_epoch()
            self._split: tuple[list[nn.Parameter], list[nn.Parameter]] | None = None

        def parameter_split(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
            """(architecture parameters, weights) of the supernet: the former as NNI's one-shot module
            collects them (``arch_parameters`` of its supernet modules), the latter every other one."""
            if self._split is None:
                from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule

                arch = {id(p): p for m in self.model.modules()
                        if isinstance(m, BaseSuperNetModule) and hasattr(m, "arch_parameters")
                        for p in m.arch_parameters()}
                self._split = (list(arch.values()), [p for p in self.model.parameters() if id(p) not in arch])
            return self._split

        def reset_epoch(self) -> None:
            self.loss_sum, self.correct, self.images = None, None, 0

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            arch, weights = self.parameter_split()
            # NNI's one-shot step 2i updates the architecture, 2i+1 the weights, and each zeroes the
            # other's gradients before it uses them: built without them, the graph computes neither
            # (in ProxylessNAS' weight step, every candidate's output per mixed layer; in its
            # architecture step, the weights' gradients). What is stepped is the same.
            with _without_gradients(weights if batch_idx % 2 == 0 else arch):
                logits = self.model(x)
            loss = nn.functional.cross_entropy(logits, y)
            if batch_idx % 2 == 1:  # NNI's one-shot modules call 2i for the architecture step, 2i+1 for weights
                n = y.shape[0]
                loss_sum, correct = loss.detach() * n, (logits.argmax(1) == y).sum()
                self.loss_sum = loss_sum if self.loss_sum is None else self.loss_sum + loss_sum
                self.correct = correct if self.correct is None else self.correct + correct
                self.images += n
            return loss

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum,
                                  weight_decay=self.cfg.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.epochs, eta_min=self.cfg.lr_min)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    return SupernetModule


@contextlib.contextmanager
def _without_gradients(params: list[nn.Parameter]):
    """``params`` need no gradient in the graphs built inside (their flags come back after)."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _callback_class():
    import pytorch_lightning as pl

    class EpochWindows(pl.Callback):
        """A tracer window per search epoch (``<stage>/epoch<N>``), and the epoch's record."""

        def __init__(self, tracer, stage: str, module, bar, checkpoint: Path | None = None):
            self.tracer, self.stage, self.module, self.bar = tracer, stage, module, bar
            self.checkpoint = checkpoint
            self.records: list[dict[str, Any]] = []
            self.restored = 0  # epochs whose records came from a checkpoint (trained by an earlier process)
            self.saved_order: list[list[str]] | None = None  # each optimizer's parameters, as the checkpoint holds them
            self.arch_state_reset = False  # whether the architecture optimizer's state could not be restored
            self.trainer = None  # set up by Lightning: state_dict() has no trainer argument

        def setup(self, trainer, pl_module, stage) -> None:
            self.trainer = trainer

        def optimizer_order(self) -> list[list[str]]:
            """Each optimizer's parameters by name, in its order (which Lightning restores it by)."""
            names = {id(p): n for n, p in self.trainer.lightning_module.named_parameters()}
            return [[names.get(id(p), "?") for g in opt.param_groups for p in g["params"]]
                    for opt in self.trainer.optimizers]

        def state_dict(self) -> dict[str, Any]:
            return {"records": self.records, "optimizer_order": self.optimizer_order()}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.records = list(state["records"])
            self.saved_order = state.get("optimizer_order")  # absent from checkpoints written before 2026-11-29
            self.restored = len(self.records)
            self.bar.update(self.restored)

        def on_train_start(self, trainer, pl_module):
            if self.restored:
                self.match_optimizer_states()

        def match_optimizer_states(self) -> None:
            """Give each parameter its own optimizer state back after a resume.

            Lightning restores an optimizer's state by position, and NNI lists the architecture
            parameters from a set (``DartsLightningModule.arch_parameters``, DARTS and ProxylessNAS):
            in the order of their memory addresses, another one in each process. The checkpoint holds
            each optimizer's order by name; the states move to the parameters of those names. A
            checkpoint without it (written before this was fixed) cannot say which Adam moments are
            whose: the architecture optimizer starts its moments anew (``arch_state_reset``; the
            architecture parameters, the weights and their optimizer resume exactly)."""
            current = self.optimizer_order()
            if any("?" in order for order in current):
                raise RuntimeError(f"{self.stage}: an optimizer holds a parameter the module does not name")
            if self.saved_order is not None and len(self.saved_order) != len(current):
                raise RuntimeError(f"{self.stage}: the search checkpoint holds {len(self.saved_order)} optimizers, "
                                   f"this search has {len(current)}")
            arch = {id(p) for p in self.module.parameter_split()[0]}
            for i, opt in enumerate(self.trainer.optimizers):
                params = [p for g in opt.param_groups for p in g["params"]]
                saved = self.saved_order[i] if self.saved_order is not None else None
                if saved == current[i]:
                    continue
                if saved is None:
                    if params and all(id(p) in arch for p in params):
                        opt.state.clear()
                        self.arch_state_reset = True
                        warnings.warn(f"{self.stage}: the search checkpoint does not say which architecture "
                                      "parameter each Adam state belongs to; the architecture optimizer starts "
                                      f"its moments anew at epoch {self.restored}", stacklevel=2)
                    continue
                sizes = [len(g["params"]) for g in opt.param_groups]
                starts = [sum(sizes[:k]) for k in range(len(sizes))]
                if any(sorted(saved[a:a + n]) != sorted(current[i][a:a + n]) for a, n in zip(starts, sizes)):
                    raise RuntimeError(f"{self.stage}: optimizer {i} of the search checkpoint holds other "
                                       f"parameters than this search's ({len(saved)} vs {len(current[i])})")
                loaded = {name: opt.state[p] for name, p in zip(saved, params) if p in opt.state}
                opt.state.clear()
                for name, p in zip(current[i], params):
                    if name in loaded:
                        opt.state[p] = loaded[name]

        def on_train_epoch_start(self, trainer, pl_module):
            self.module.reset_epoch()
            self.tracer.begin_window(f"{self.stage}/epoch{trainer.current_epoch}")

        def on_train_epoch_end(self, trainer, pl_module):
            epoch = trainer.current_epoch
            window = self.tracer.end_window(f"{self.stage}/epoch{epoch}").to_dict()
            m = self.module
            n = max(m.images, 1)
            loss = float(m.loss_sum) / n if m.loss_sum is not None else float("nan")
            acc = float(m.correct) / n if m.correct is not None else float("nan")
            if not torch.isfinite(torch.tensor(loss)):
                raise FloatingPointError(f"{self.stage}: supernet training loss is {loss} at epoch {epoch}")
            self.records.append({"epoch": epoch, "train_loss": loss, "train_acc": acc, "images": m.images,
                                 "window": window})
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", J=f"{window.get('energy_j', float('nan')):.0f}")
            if self.checkpoint is not None:  # outside the epoch's window: not in the search's energy
                tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
                trainer.save_checkpoint(tmp)
                os.replace(tmp, self.checkpoint)

    return EpochWindows


def _accelerator(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index or 0]}
    return {"accelerator": "cpu", "devices": 1}


def _keep_signal_handlers(trainer) -> None:
    """Stop Lightning from installing its SIGTERM/SLURM handlers for the fit (not needed in-process).

    Lightning snapshots every signal's handler before a fit and re-installs them all after it; in a
    Jupyter kernel that leaves the kernel logging a KeyboardInterrupt when it shuts down. Its
    ``_signal_connector`` is private: where a Lightning version lacks it, nothing is changed.
    """
    connector = getattr(trainer, "_signal_connector", None)
    if connector is not None and hasattr(connector, "register_signal_handlers"):
        connector.register_signal_handlers = lambda: None


def search(space: nn.Module, strategy, train_loader, val_loader, device: torch.device, cfg: SearchConfig, tracer,
           root: str | Path, stage: str = "search", progress: bool = True,
           checkpoint: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Search ``space`` with the NNI ``strategy``; returns (exported architecture, stage summary).

    ``train_loader`` feeds the weight steps, ``val_loader`` the architecture steps (the two halves of
    the training set). ``tracer`` must be started; each epoch is a window ``<stage>/epoch<N>`` and
    the summary sums them (as :meth:`greenlib.train.Trainer.fit`'s) with the epochs under ``epochs``.
    ``root`` is Lightning's ``default_root_dir`` (nothing is written there with these settings).
    ``checkpoint``: a file written after every epoch and, where it exists, resumed from (the epochs it
    holds keep their windows and records; the summary counts every epoch once). The architecture is
    NNI's exported sample: a JSON-serialisable dict (label -> choice).
    """
    from tqdm import tqdm

    import_nni()
    with quiet():
        from nni.nas.evaluator.pytorch import Lightning, Trainer
        from nni.nas.execution import SequentialExecutionEngine
        from nni.nas.space import RawFormatModelSpace

        module = _module_class()(cfg)
        bar = tqdm(total=cfg.epochs, desc=stage, disable=not progress, unit="epoch", mininterval=10.0)
        checkpoint = Path(checkpoint) if checkpoint is not None else None
        windows = _callback_class()(tracer, stage, module, bar, checkpoint)
        fit_kwargs = {"ckpt_path": str(checkpoint)} if _readable(checkpoint) else {}
        trainer = Trainer(max_epochs=cfg.epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(root),
                          callbacks=[windows], **_accelerator(device))
        _keep_signal_handlers(trainer)
        evaluator = Lightning(module, trainer, train_dataloaders=train_loader, val_dataloaders=val_loader,
                              fit_kwargs=fit_kwargs)
        engine = SequentialExecutionEngine(continue_on_failure=False)
        strategy.initialize(RawFormatModelSpace.from_model(space, evaluator), engine)
        try:
            strategy.run()
        finally:
            bar.close()
            engine.shutdown()
        if len(windows.records) != cfg.epochs:
            raise RuntimeError(f"{stage}: Lightning ran {len(windows.records)} of {cfg.epochs} epochs")
        best = next(strategy.list_models())
        arch = _plain(best.sample)
    summary = merge_windows(stage, [r["window"] for r in windows.records])
    # the stage's span in this tracer's clock (what experiments.stage_samples cuts the trace to): the
    # epochs this process trained, not those a checkpoint brought from an earlier one
    first = min(windows.restored, len(windows.records) - 1)
    summary |= {k: windows.records[i]["window"][k] for i, k in ((first, "start_s"), (-1, "end_s"))
                if k in windows.records[i]["window"]}
    summary["resumed_epochs"] = windows.restored
    if windows.arch_state_reset:  # the epoch from which the architecture's Adam moments started anew
        summary["arch_optimizer_reset_epoch"] = windows.restored
    epochs = [{k: v for k, v in r.items() if k != "window"}
              | {f"window.{k}": v for k, v in r["window"].items() if not isinstance(v, dict)}
              for r in windows.records]
    return arch, summary | {"epochs": epochs}


def _readable(checkpoint: Path | None) -> bool:
    """Whether ``checkpoint`` exists and loads; one that does not load (a write cut off) is removed,
    with a warning, and the search starts from its beginning."""
    if checkpoint is None or not checkpoint.exists():
        return False
    try:
        torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - whatever the reason, the search cannot resume from it
        warnings.warn(f"search checkpoint {checkpoint} does not load ({type(e).__name__}: {e}); searching "
                      "from the first epoch", stacklevel=3)
        checkpoint.unlink()
        return False
    return True


def _plain(value: Any) -> Any:
    """NNI's sample as plain JSON types (tuples -> lists, numpy scalars -> Python)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value

"""One NAS run: search (traced), export the architecture, retrain it from scratch (traced), Acc and IEC.

    ctx = experiments.prepare(config.resolve("nas", profile="quick"))
    res = run_nas(ctx, "darts", seed=0)               # searched on ctx's dataset (100 classes)
    res = run_nas(ctx, "proxyless", seed=0, search_classes=10)  # searched on the CIFAR-10-shaped variant
    res["metrics"]["tec_wh"]                           # search + retrain, W·h

NAS has no base model: the paper's Table 2 lists "search" and "retrain the found architecture".
A run's stages:

1. ``search``: the strategy trains the supernet on half of the search dataset's training images and
   its architecture parameters on the other half, one tracer window per epoch. The exported
   architecture is written to ``architecture.json`` in the run folder as soon as the search ends,
   so a run killed later resumes at the retraining without searching again. A run killed during
   the search resumes from its last search epoch (``search_checkpoint.ckpt``: Lightning's whole
   training state, written after every epoch).
2. ``retrain``: the fixed model the architecture describes, trained from scratch with
   :class:`greenlib.train.Trainer` (per-epoch windows, a checkpoint once a minute) on ``ctx``'s dataset.
3. ``inference``: IEC of the retrained model (``experiments.measure_iec``), after its accuracy.

``tec_wh = tec_search_wh + tec_retrain_wh``. The search can run on a CIFAR-10-shaped counterpart of
the dataset (``search_classes=10``: the paper's second NAS rows, searched on CIFAR-10 and evaluated
on CIFAR-100); the retraining and evaluation always use ``ctx``'s dataset.
"""
from __future__ import annotations

import contextlib
import json
from itertools import product
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from .. import experiments
from ..config import ConfigError, Resolved
from ..data import GPULoader, TorchvisionLoader, load_dataset, variant, variants
from ..experiments import Context, hardware_name, shared_config
from ..io import atomic_torch_save, atomic_write_json
from ..models import model_info
from ..results import Run
from ..train import Trainer, TrainConfig, eager_stage, evaluate, seed_everything
from . import spaces, strategies
from .search import SearchConfig, search
from .spaces import SpaceSize

ARCHITECTURE_FILE = "architecture.json"
SEARCH_CHECKPOINT = "search_checkpoint.ckpt"  # the search's last epoch, until the architecture is written
SEARCH_CLASSES: tuple[int, ...] = (100, 10)  # searched on the dataset itself, or on its CIFAR-10-shaped counterpart
# DARTS' retraining recipe (SGD momentum 0.9, weight decay 3e-4, cosine to 0); its auxiliary head,
# drop-path, cutout and gradient clipping are left out (docs/nas.md)
RETRAIN_MOMENTUM = 0.9
RETRAIN_WEIGHT_DECAY = 3e-4
_LOADERS = {"gpu": GPULoader, "dataloader": TorchvisionLoader}


def space_size(cfg: Resolved) -> SpaceSize:
    """The notebook's space-size parameters as a :class:`SpaceSize`."""
    return SpaceSize(width=cfg.width, cells=cfg.cells, blocks=cfg.blocks, retrain_width=cfg.retrain_width,
                     retrain_cells=cfg.retrain_cells)


def search_dataset(dataset: str, search_classes: int, data_root: str | None = None) -> str:
    """The dataset a search runs on: ``dataset`` itself (its classes) or its counterpart with ``search_classes``
    found at ``data_root`` (see :func:`greenlib.data.variant`)."""
    if search_classes not in SEARCH_CLASSES:
        raise ValueError(f"search_classes={search_classes!r} is not accepted; accepted: "
                         f"{', '.join(map(str, SEARCH_CLASSES))}")
    return variant(dataset, search_classes, data_root=data_root)


def search_config(cfg: Resolved) -> SearchConfig:
    return SearchConfig(epochs=cfg.search_epochs, lr=cfg.lr)


def retrain_epochs(cfg: Resolved, strategy: str) -> int:
    """Epochs retraining ``strategy``'s exported architecture: its own parameter ``<strategy>_retrain_epochs``
    (paper profile: DARTS 600, ProxylessNAS 300; docs/nas.md says why)."""
    strategies.get(strategy)  # StrategyError for an unknown strategy
    name = f"{strategy}_retrain_epochs"
    if name not in cfg:
        raise ConfigError(f"{cfg.section} has no parameter {name!r}; every strategy needs one "
                          f"(greenlib/config.py, section 'nas')")
    return cfg[name]


def retrain_config(cfg: Resolved, strategy: str) -> TrainConfig:
    return TrainConfig(epochs=retrain_epochs(cfg, strategy), lr=cfg.lr, momentum=RETRAIN_MOMENTUM,
                       weight_decay=RETRAIN_WEIGHT_DECAY, schedule="cosine", graph_capture=cfg.graph_capture,
                       eval_every=cfg.eval_every)


def nas_config(cfg: Resolved, strategy: str, seed: int, search_classes: int = 100,
               space: str | None = None) -> dict[str, Any]:
    """A NAS run's config without hardware (what selects stored runs). Raises before anything is built
    for an unknown strategy or space, a known-broken pair or a size the space cannot build."""
    spec, space = strategies.check_pair(strategy, space)
    size = space_size(cfg)
    sspec = spaces.get(space)
    sspec.check(size)
    s, t = search_config(cfg), retrain_config(cfg, strategy)
    return {"kind": "nas", "model": space, "strategy": strategy, "space": space, "seed": seed,
            "search_dataset": search_dataset(cfg.dataset, search_classes, cfg.get("data_root") or None),
            **sspec.size_config(size),
            "search_epochs": s.epochs, "search_lr": s.lr, "search_lr_min": s.lr_min, "search_momentum": s.momentum,
            "search_weight_decay": s.weight_decay, "arc_lr": strategies.ARC_LR,
            "gradient_clip": strategies.GRADIENT_CLIP, "retrain_epochs": t.epochs, "batch_size": cfg.batch_size,
            "lr": t.lr, "schedule": t.schedule, "momentum": t.momentum, "weight_decay": t.weight_decay,
            "graph_capture": t.graph_capture, "eval_every": t.eval_every, **shared_config(cfg)}


def check_plan(cfg: Resolved, space: str | None = None) -> None:
    """Check every (strategy, search dataset) the parameters ask for; raises before anything trains."""
    for strategy, classes in product(cfg.strategies, cfg.search_classes):
        nas_config(cfg, strategy, 0, classes, space)


def _search_loaders(ctx: Context, name: str, seed: int):
    """Weight-step and architecture-step loaders over the two halves of the search dataset's training images."""
    if name == ctx.dataset.name:
        ds = ctx.dataset
    else:
        ds = load_dataset(name, seed=experiments.DATASET_SEED, data_root=ctx.cfg.get("data_root") or None).subset(
            ctx.cfg.train_size, ctx.cfg.test_size)
    n = len(ds.train_y)
    if n < 2:
        raise ValueError(f"train_size={n}: a search needs at least 2 training images (two halves)")
    half = n // 2
    make = _LOADERS[ctx.cfg.loader]
    common = dict(batch_size=ctx.cfg.batch_size, device=ctx.device, train=True, mean=ds.mean, std=ds.std)
    weights = make(ds.train_x[:half], ds.train_y[:half], seed=seed, **common)
    arch = make(ds.train_x[half:], ds.train_y[half:], seed=seed + 1, **common)
    return ds, weights, arch


def run_nas(ctx: Context, strategy: str, seed: int, search_classes: int = 100, space: str | None = None,
            progress: bool = True) -> dict[str, Any]:
    """Search with ``strategy`` (on ``space``, default: the paper's for it), retrain, measure; cached.

    Raises StrategyError / SpaceError (one line) for an unknown strategy or space, a known-broken
    pair or a bad size, before anything is built or trained. A complete run is returned as stored.
    """
    cfg = ctx.cfg
    config = nas_config(cfg, strategy, seed, search_classes, space) | {"hardware": hardware_name(ctx.device)}
    space = config["space"]
    run = ctx.store.open(config, environment=ctx.environment, force=cfg.force)
    if run.complete:
        return run.result
    if cfg.force:  # a forced run searches again too
        for name in (ARCHITECTURE_FILE, SEARCH_CHECKPOINT, "checkpoint.pt"):
            (run.folder / name).unlink(missing_ok=True)
    size = space_size(cfg)
    num_classes = ctx.dataset.num_classes
    with _cpu_threads(ctx.device), ctx.tracer() as tracer:
        arch, search_stage, search_ds = _search_stage(ctx, run, strategy, space, size, seed, config, tracer, progress)
        seed_everything(seed)
        model = spaces.build_fixed(space, arch, size, num_classes)
        train_loader, test_loader = ctx.loaders(seed)
        trainer = Trainer(model, train_loader, retrain_config(cfg, strategy), ctx.device,
                          checkpoint=run.folder / "checkpoint.pt", eval_loader=test_loader)
        retrain = trainer.fit(tracer, "retrain", progress=progress)
        run.save_stage("retrain", retrain, experiments.stage_samples(tracer, retrain))
        acc = evaluate(model, test_loader, ctx.device)
        iec = experiments.measure_iec(ctx, run, model, tracer, test_loader)
    atomic_torch_save(model.state_dict(), run.folder / "model.pt")
    (run.folder / "checkpoint.pt").unlink(missing_ok=True)
    info = model_info(model)
    stages = [search_stage, retrain, iec]
    return run.finish({
        "method": strategies.get(strategy).method, "architecture": arch,
        **experiments.acc_metrics(acc),
        "tec_search_wh": search_stage["energy_wh"], "tec_retrain_wh": retrain["energy_wh"],
        "tec_wh": search_stage["energy_wh"] + retrain["energy_wh"],
        "tec_j": search_stage["energy_j"] + retrain["energy_j"],
        "search_elapsed_s": search_stage["elapsed_s"], "retrain_elapsed_s": retrain["elapsed_s"],
        "train_elapsed_s": search_stage["elapsed_s"] + retrain["elapsed_s"],
        **experiments.iec_metrics(iec),
        "energy_measured_by": "+".join(dict.fromkeys(str(s["energy_source"]) for s in stages)),
        "estimated": any(bool(s.get("estimated")) for s in stages),
        "params": info["params"], "flops_per_image": info["flops_per_image"],
        "final_train_loss": trainer.history[-1].train_loss, "final_train_acc": trainer.history[-1].train_acc,
        "search_final_train_loss": search_stage["epochs"][-1]["train_loss"],
        # a search resumed from a checkpoint that did not name its optimizers' parameters (docs/nas.md)
        **({"search_arch_optimizer_reset_epoch": search_stage["arch_optimizer_reset_epoch"]}
           if "arch_optimizer_reset_epoch" in search_stage else {}),
        "dataset_description": ctx.dataset.description, "search_dataset_description": search_ds,
    })


@contextlib.contextmanager
def _cpu_threads(device: torch.device) -> Iterator[None]:
    """On the CPU, one intra-op thread for the run, restored afterwards.

    A supernet step is thousands of tiny ops: extra threads gain nothing, and where the cores are
    shared (a CI runner, a busy workstation) each op's thread team waits on the others; a smoke
    search then takes many times longer. GPU runs are left alone.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _search_stage(ctx: Context, run: Run, strategy: str, space: str, size: SpaceSize, seed: int,
                  config: Mapping[str, Any], tracer, progress: bool) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The run's search stage and its architecture: stored ones when the search finished before, else searched."""
    arch_path = run.folder / ARCHITECTURE_FILE
    if arch_path.exists() and run.has_stage("search"):
        stored = json.loads(arch_path.read_text())
        return stored["architecture"], run.stage("search"), stored["search_dataset_description"]
    ds, weights, arch_loader = _search_loaders(ctx, config["search_dataset"], seed)
    seed_everything(seed)
    supernet = spaces.build_space(space, size, ds.num_classes)
    strat = strategies.get(strategy).make()
    arch, summary = search(supernet, strat, weights, arch_loader, ctx.device, search_config(ctx.cfg), tracer,
                           root=run.folder / "lightning", progress=progress,
                           checkpoint=run.folder / SEARCH_CHECKPOINT)
    summary = summary | eager_stage("search", "nas search")
    summary["unused_gradients"] = "not computed"  # searches before 2026-11-29 computed them (docs/nas.md)
    if strategy == "proxyless":  # searches before 2026-11-28 ran NNI's scalar loop (docs/nas.md)
        summary["arch_gradient"] = "vectorised"
    run.save_stage("search", summary, experiments.stage_samples(tracer, summary))
    atomic_write_json(arch_path, {"strategy": strategy, "space": space, **spaces.get(space).size_config(size),
                                  "search_dataset": ds.name, "search_dataset_description": ds.description,
                                  "architecture": arch})
    (run.folder / SEARCH_CHECKPOINT).unlink(missing_ok=True)  # the architecture stands for it now
    del supernet, strat
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return arch, summary, ds.description


def load_architecture(result: Mapping[str, Any]) -> dict[str, Any]:
    """The exported architecture of a stored NAS run (its ``result``)."""
    return dict(result["metrics"]["architecture"])


def build_model(result: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The fixed model of a stored NAS run, freshly initialised (what the run retrained)."""
    c = result["config"]
    size = SpaceSize(**{k: c[k] for k in spaces.get(c["space"]).size_keys})
    return spaces.build_fixed(c["space"], load_architecture(result), size, num_classes)


def load_model(ctx: Context, result: Mapping[str, Any]) -> nn.Module:
    """The retrained model of a stored NAS run, with its weights (``model.pt``), on ``ctx.device``, in eval mode.

    Raises FileNotFoundError naming the file when the weights are gone (they are not committed).
    """
    weights = ctx.store.root / result["run_id"] / "model.pt"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing (weights are not committed); run the NAS run again with "
                                "force=True to retrain it")
    model = build_model(result, ctx.dataset.num_classes)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.to(ctx.device).eval()


def stored_nas(cfg: Resolved, space: str | None = None) -> "pandas.DataFrame":
    """The complete NAS runs these notebook parameters ask for, measured on any hardware.

    Adds ``search_classes`` (100 or 10) so rows meet the paper's (searched on CIFAR-100 / CIFAR-10).
    A run searched on any dataset with those classes matches (:func:`greenlib.data.variants`): the
    CIFAR-10 rows measured on the JPEG copy are found on a machine that has torchvision's CIFAR-10 or
    neither.
    """
    import pandas as pd

    from ..paths import results_dir
    from ..results import ResultsStore, config_mask

    df = ResultsStore(results_dir(cfg.profile)).load_results()
    if df.empty or "kind" not in df:
        return df.iloc[0:0]
    df = df[df["kind"] == "nas"]
    keep = pd.Series(False, index=df.index)
    classes = pd.Series(0, index=df.index)
    for strategy, search_classes, seed in product(cfg.strategies, cfg.search_classes, cfg.seeds):
        want = nas_config(cfg, strategy, seed, search_classes, space)
        for searched_on in variants(want["dataset"], search_classes):
            match = config_mask(df, {**want, "search_dataset": searched_on})
            keep |= match
            classes[match] = search_classes
    return df[keep].assign(search_classes=classes[keep]).reset_index(drop=True)

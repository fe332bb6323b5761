"""A pruning run in the results store: base model (reused) -> prune -> fine-tune -> Acc and IEC.

``run_pruning(ctx, model, pruner, seed)`` follows ``experiments.run_baseline``: its config holds
everything that changes its numbers (hardware included), a complete run folder is a cache hit,
each stage is stored as it ends, and ``Run.finish(metrics)`` comes last.

TEC is the sum of the three stages the paper's Table 2 lists for pruning, each stored apart:

- ``base_training``: the baseline run's stage (``experiments.base_model``, shared by every pruner
  and by the other families); copied into this run's folder with ``reused_from`` naming it;
- ``pruning`` ("Prune Cost"): mask computation (and, for iterative pruners, their training
  epochs) plus ModelSpeedup (:mod:`.schedule`);
- ``finetuning``: ``finetune_epochs`` epochs of the smaller model (the paper's re-training).

Metrics state the accounting: ``tec_wh = tec_base_wh + tec_prune_wh + tec_finetune_wh``. IEC,
params and FLOPs are the smaller model's; ``params_before``/``flops_before`` the base's and
``params_ratio``/``flops_ratio`` the smaller over the base. ``scope_applied``, ``pruned_layers``
(None: every conv) and ``scope_note`` say which convs were pruned (:mod:`.scope`).

A run killed during fine-tuning resumes from its checkpoint: the pruned model is kept as
``pruned_model.pt`` (the whole module: its shape is no longer the zoo's) with the ``pruning``
stage; a run killed during pruning prunes again. ``model.pt`` holds the fine-tuned weights for
that module (``torch.load(pruned_model.pt, weights_only=False).load_state_dict(...)``).
"""
from __future__ import annotations

from typing import Any

import torch

from .. import experiments
from ..config import Resolved
from ..experiments import Context, hardware_name, inference_images, shared_config
from ..io import atomic_torch_save
from ..models import MODELS, model_info
from ..train import TrainConfig, eager_stage, seed_everything
from .registry import get_pruner
from .schedule import MOMENTUM, WEIGHT_DECAY, get_iterative_schedule, prune
from .scope import check_scope, resolve_scope
from .speedup import check_sparsity

FINETUNE_SCHEDULE = "step"  # NNI's pruning example: x0.1 at 50% and 75% of the fine-tuning epochs


def finetune_train_config(cfg: Resolved, epochs: int | None = None) -> TrainConfig:
    """The fine-tuning's SGD of the sped-up (smaller, plain) model: ``epochs`` (None: ``cfg.finetune_epochs``)
    at ``cfg.lr``, step schedule, graphed where ``graph_capture`` asks."""
    epochs = cfg.finetune_epochs if epochs is None else epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"finetune_epochs={epochs!r}: must be an int >= 1")
    return TrainConfig(epochs=epochs, lr=cfg.lr, schedule=FINETUNE_SCHEDULE, momentum=MOMENTUM,
                       weight_decay=WEIGHT_DECAY, graph_capture=cfg.graph_capture, eval_every=cfg.eval_every)


def finetune_lengths(cfg: Resolved) -> tuple[int, int]:
    """``(short_finetune_epochs, finetune_epochs)`` of notebook 02's comparison; ValueError unless short < long."""
    short, long = cfg.short_finetune_epochs, cfg.finetune_epochs
    if not short < long:
        raise ValueError(f"short_finetune_epochs={short} must be below finetune_epochs={long} for the comparison")
    return short, long


def pruning_config(cfg: Resolved, pruner: str, finetune_epochs: int | None = None) -> dict[str, Any]:
    """A pruning run's config without model, seed and hardware (what selects stored runs).

    ``finetune_epochs`` (None: the profile's) sets the fine-tuning length (notebook 02 compares a
    short one). A one-shot pruner trains no epoch while pruning and updates its masks once: its
    config says so (``prune_epochs=0``, ``prune_iterations=1``, ``iterative_schedule="none"``), and
    so does an iterative one on the ``nni2`` schedule (``prune_iterations=1``), so changing
    settings a run does not use leaves it cached. ``scope`` is the scope asked for; the one
    applied to the model is in the run's metrics (``scope_applied``).
    """
    spec = get_pruner(pruner)
    schedule = get_iterative_schedule(cfg.iterative_schedule) if spec.iterative else None
    t = finetune_train_config(cfg, finetune_epochs)
    return {"kind": "pruning", "pruner": spec.name, "sparsity": check_sparsity(cfg.sparsity),
            "scope": check_scope(cfg.scope), "base_epochs": cfg.base_epochs, "batch_size": cfg.batch_size,
            "prune_epochs": cfg.prune_epochs if spec.iterative else 0,
            "iterative_schedule": schedule.name if schedule else "none",
            "prune_iterations": cfg.prune_iterations if schedule and schedule.scheduled else 1,
            "finetune_epochs": t.epochs, "lr": t.lr, "finetune_schedule": t.schedule, "momentum": t.momentum,
            "weight_decay": t.weight_decay, "graph_capture": t.graph_capture, "eval_every": t.eval_every,
            **shared_config(cfg)}


def stored_prunings(cfg: Resolved, finetune_epochs: int | None = None) -> "pandas.DataFrame":
    """The stored pruning runs these notebook parameters ask for (fine-tuned ``finetune_epochs``,
    None: the profile's), measured on any hardware."""
    import pandas as pd

    from ..report import load_runs

    parts = [load_runs(cfg.profile, model=cfg.models, seed=cfg.seeds, **pruning_config(cfg, p, finetune_epochs))
             for p in cfg.pruners]
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def run_pruning(ctx: Context, model_name: str, pruner: str, seed: int, progress: bool = True,
                finetune_epochs: int | None = None) -> dict[str, Any]:
    """Prune the trained ``model_name`` with ``pruner``, fine-tune it ``finetune_epochs`` epochs
    (None: the profile's), measure it; cached in the store.

    ``ctx`` comes from ``experiments.prepare`` with a ``pruning`` config. An unknown model, pruner,
    scope or iterative schedule or a sparsity outside (0, 1) raises ValueError before anything is
    trained or stored.
    """
    cfg = ctx.cfg
    spec = get_pruner(pruner)
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; accepted: {', '.join(MODELS)}")
    config = {**pruning_config(cfg, pruner, finetune_epochs), "model": model_name, "seed": seed,
              "hardware": hardware_name(ctx.device)}
    train_cfg = finetune_train_config(cfg, finetune_epochs)
    run = ctx.store.open(config, environment=ctx.environment, force=cfg.force)
    if run.complete:
        return run.result
    base, base_res = experiments.base_model(ctx, model_name, seed, epochs=cfg.base_epochs, progress=progress)
    run.save_stage("base_training", base_res["stages"]["base_training"] | {"reused_from": base_res["run_id"]})

    pruned_path = run.folder / "pruned_model.pt"
    if run.has_stage("pruning") and pruned_path.exists() and not cfg.force:
        model = torch.load(pruned_path, map_location=ctx.device, weights_only=False).eval()
        pruning = run.stage("pruning")
    else:
        (run.folder / "checkpoint.pt").unlink(missing_ok=True)  # a fine-tuning checkpoint of another pruning
        train_loader, test_loader = ctx.loaders(seed)
        example = inference_images(ctx, test_loader, 2)
        seed_everything(seed)
        scope = resolve_scope(cfg.scope, model_name, base)
        with ctx.tracer() as tracer:
            result = prune(base, spec.name, cfg.sparsity, tracer, example, loader=train_loader,
                           epochs=cfg.prune_epochs, iterations=cfg.prune_iterations, schedule=cfg.iterative_schedule,
                           layers=scope.layers, lr=cfg.lr, progress=progress)
            pruning = result.summary | scope.to_dict() | {"params_before": result.before["params"],
                                        "flops_before": result.before["flops_per_image"],
                                        "params_after": result.after["params"],
                                        "flops_after": result.after["flops_per_image"],
                                        **eager_stage("pruning", "pruning statistics")}
            model = result.model
            atomic_torch_save(model, pruned_path)  # before the stage: a stored stage implies the model
            run.save_stage("pruning", pruning, experiments.stage_samples(tracer, pruning))

    after = model_info(model)
    measured = experiments.train_and_measure(ctx, run, model, seed, train_cfg, stage="finetuning", progress=progress)
    base_m = base_res["metrics"]
    tec_base, tec_prune, tec_finetune = base_m["tec_wh"], pruning["energy_wh"], measured["tec_wh"]
    metrics = {
        "acc": measured["acc"], "test_loss": measured["test_loss"], "test_images": measured["test_images"],
        "tec_wh": tec_base + tec_prune + tec_finetune,
        "tec_j": base_m["tec_j"] + pruning["energy_j"] + measured["tec_j"],
        "tec_base_wh": tec_base, "tec_prune_wh": tec_prune, "tec_finetune_wh": tec_finetune,
        "prune_elapsed_s": pruning["elapsed_s"], "finetune_elapsed_s": measured["train_elapsed_s"],
        **{k: measured[k] for k in (*experiments.IEC_FIELDS, "iec_stack")},
        "energy_measured_by": measured["energy_measured_by"],
        "estimated": bool(measured["estimated"] or pruning.get("estimated") or base_m.get("estimated")),
        "params": after["params"], "flops_per_image": after["flops_per_image"],
        "params_before": base_m["params"], "flops_before": base_m["flops_per_image"],
        "params_ratio": after["params"] / base_m["params"],
        "flops_ratio": after["flops_per_image"] / base_m["flops_per_image"],
        "scope_applied": pruning["scope_applied"], "pruned_layers": pruning["pruned_layers"],
        "scope_note": pruning["scope_note"],
        "base_run_id": base_res["run_id"], "base_acc": base_m["acc"], "base_iec_wh": base_m["iec_wh"],
        "method": spec.method, "schedule": spec.schedule, "mask_updates": pruning["mask_updates"],
        "final_train_loss": measured["final_train_loss"], "final_train_acc": measured["final_train_acc"],
        "dataset_description": ctx.dataset.description,
    }
    return run.finish(metrics)

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
params and FLOPs are the smaller model's; ``params_before``/``flops_before`` the base's.

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
from .schedule import MOMENTUM, WEIGHT_DECAY, prune
from .speedup import check_sparsity

FINETUNE_SCHEDULE = "step"  # NNI's pruning example: x0.1 at 50% and 75% of the fine-tuning epochs


def finetune_train_config(cfg: Resolved) -> TrainConfig:
    """Fine-tuning of the sped-up (smaller, plain) model: graphed where ``graph_capture`` asks."""
    return TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.lr, schedule=FINETUNE_SCHEDULE, momentum=MOMENTUM,
                       weight_decay=WEIGHT_DECAY, graph_capture=cfg.graph_capture, eval_every=cfg.eval_every)


def pruning_config(cfg: Resolved, pruner: str) -> dict[str, Any]:
    """A pruning run's config without model, seed and hardware (what selects stored runs).

    A one-shot pruner trains no epoch while pruning and updates its masks once: its config says
    so (``prune_epochs=0``, ``prune_iterations=1``), so changing the iterative settings leaves
    one-shot runs cached.
    """
    spec = get_pruner(pruner)
    t = finetune_train_config(cfg)
    return {"kind": "pruning", "pruner": spec.name, "sparsity": check_sparsity(cfg.sparsity),
            "base_epochs": cfg.base_epochs, "batch_size": cfg.batch_size,
            "prune_epochs": cfg.prune_epochs if spec.iterative else 0,
            "prune_iterations": cfg.prune_iterations if spec.iterative else 1,
            "finetune_epochs": t.epochs, "lr": t.lr, "finetune_schedule": t.schedule, "momentum": t.momentum,
            "weight_decay": t.weight_decay, "graph_capture": t.graph_capture, "eval_every": t.eval_every,
            **shared_config(cfg)}


def stored_prunings(cfg: Resolved) -> "pandas.DataFrame":
    """The stored pruning runs these notebook parameters ask for, measured on any hardware."""
    import pandas as pd

    from ..report import load_runs

    parts = [load_runs(cfg.profile, model=cfg.models, seed=cfg.seeds, **pruning_config(cfg, p)) for p in cfg.pruners]
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def run_pruning(ctx: Context, model_name: str, pruner: str, seed: int, progress: bool = True) -> dict[str, Any]:
    """Prune the trained ``model_name`` with ``pruner``, fine-tune it, measure it; cached in the store.

    ``ctx`` comes from ``experiments.prepare`` with a ``pruning`` config. An unknown model or pruner
    or a sparsity outside (0, 1) raises ValueError before anything is trained or stored.
    """
    cfg = ctx.cfg
    spec = get_pruner(pruner)
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; accepted: {', '.join(MODELS)}")
    config = {**pruning_config(cfg, pruner), "model": model_name, "seed": seed, "hardware": hardware_name(ctx.device)}
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
        with ctx.tracer() as tracer:
            result = prune(base, spec.name, cfg.sparsity, tracer, example, loader=train_loader,
                           epochs=cfg.prune_epochs, iterations=cfg.prune_iterations, lr=cfg.lr, progress=progress)
            pruning = result.summary | {"params_before": result.before["params"],
                                        "flops_before": result.before["flops_per_image"],
                                        "params_after": result.after["params"],
                                        "flops_after": result.after["flops_per_image"],
                                        **eager_stage("pruning", "pruning statistics")}
            model = result.model
            atomic_torch_save(model, pruned_path)  # before the stage: a stored stage implies the model
            run.save_stage("pruning", pruning, experiments.stage_samples(tracer, pruning))

    after = model_info(model)
    measured = experiments.train_and_measure(ctx, run, model, seed, finetune_train_config(cfg), stage="finetuning",
                                             progress=progress)
    base_m = base_res["metrics"]
    tec_base, tec_prune, tec_finetune = base_m["tec_wh"], pruning["energy_wh"], measured["tec_wh"]
    metrics = {
        "acc": measured["acc"], "test_loss": measured["test_loss"], "test_images": measured["test_images"],
        "tec_wh": tec_base + tec_prune + tec_finetune,
        "tec_j": base_m["tec_j"] + pruning["energy_j"] + measured["tec_j"],
        "tec_base_wh": tec_base, "tec_prune_wh": tec_prune, "tec_finetune_wh": tec_finetune,
        "prune_elapsed_s": pruning["elapsed_s"], "finetune_elapsed_s": measured["train_elapsed_s"],
        "iec_wh": measured["iec_wh"], "iec_j": measured["iec_j"], "latency_ms": measured["latency_ms"],
        "throughput_ips": measured["throughput_ips"], "energy_measured_by": measured["energy_measured_by"],
        "estimated": bool(measured["estimated"] or pruning.get("estimated") or base_m.get("estimated")),
        "params": after["params"], "flops_per_image": after["flops_per_image"],
        "params_before": base_m["params"], "flops_before": base_m["flops_per_image"],
        "base_run_id": base_res["run_id"], "base_acc": base_m["acc"], "base_iec_wh": base_m["iec_wh"],
        "method": spec.method, "schedule": spec.schedule, "mask_updates": pruning["mask_updates"],
        "final_train_loss": measured["final_train_loss"], "final_train_acc": measured["final_train_acc"],
        "dataset_description": ctx.dataset.description,
    }
    return run.finish(metrics)

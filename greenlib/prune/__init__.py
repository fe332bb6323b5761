"""Pruning (the paper's Section 4 pruners) on NNI 3.0: registry, schedules, speed-up, runs.

    from greenlib import prune
    prune.PRUNERS                     # l1, l2, fpgm (one-shot); apoz, taylor, activation_mean (iterative)
    result = prune.prune(model, "apoz", 0.5, tracer, example, loader=train_loader, epochs=1, schedule="nni2")
    result.model                      # physically smaller, eval mode
    prune.run_pruning(ctx, "nni-vgg16", "l1", seed=0)   # base reused from the store -> prune -> fine-tune
    prune.resolve_scope("pruned-a", "nni-vgg16", model)  # which convs: NNI's example layers (VGG-16-pruned-A)
    prune.compare.finetune_comparison(runs)              # G and crossover with the base, per fine-tune length

Importing this package sets NNI up (:mod:`.backend`: folders, quiet logging, the torch >= 2.3
fixes of :mod:`.compat`). docs/pruning.md explains the schedules and what TEC counts.
"""
from . import backend  # noqa: F401  (first: configures NNI before any other NNI import)
from . import compare
from .activation import ActivationMeanPruner, ActivationPruner, APoZPruner
from .registry import PRUNERS, SCHEDULES, PrunerSpec, get_pruner
from .run import finetune_lengths, pruning_config, run_pruning, stored_prunings
from .schedule import ITERATIVE_SCHEDULES, PruneResult, get_iterative_schedule, prune
from .scope import SCOPES, ScopeChoice, check_scope, resolve_scope
from .speedup import check_sparsity, config_list, speedup_model

__all__ = ["compare", "PRUNERS", "SCHEDULES", "PrunerSpec", "get_pruner", "prune", "PruneResult", "speedup_model",
           "config_list", "check_sparsity", "ActivationPruner", "APoZPruner", "ActivationMeanPruner", "run_pruning",
           "pruning_config", "stored_prunings", "finetune_lengths", "ITERATIVE_SCHEDULES", "get_iterative_schedule",
           "SCOPES", "ScopeChoice", "check_scope", "resolve_scope"]

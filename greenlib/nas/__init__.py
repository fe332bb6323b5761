"""One-shot NAS through NNI 3.0: DARTS and ProxylessNAS, search + retrain, traced.

    ctx = experiments.prepare(config.resolve("nas", profile="quick"))
    nas.check_plan(ctx.cfg)                       # unknown strategy / broken pair: raises here
    res = nas.run_nas(ctx, "darts", seed=0)       # cached in the results store
    res["metrics"]["tec_wh"]                      # search + retrain, W·h
    model = nas.load_model(ctx, res)              # the retrained fixed model

Strategies (:data:`STRATEGIES`, ``strategies.py``) and search spaces (:data:`SPACES`,
``spaces.py``) are registries; the search itself is ``search.py`` and a stored run ``run.py``.
See ``docs/nas.md``.
"""
from .run import (ARCHITECTURE_FILE, SEARCH_CHECKPOINT, SEARCH_CLASSES, build_model, check_plan, load_architecture,
                  load_model, nas_config, retrain_epochs, run_nas, search_dataset, space_size, stored_nas)
from .search import SearchConfig, search
from .spaces import SPACES, SpaceError, SpaceSize, SpaceSpec, build_fixed, build_space
from .strategies import STRATEGIES, StrategyError, StrategySpec, check_pair

__all__ = [
    "ARCHITECTURE_FILE", "SEARCH_CHECKPOINT", "SEARCH_CLASSES", "SPACES", "STRATEGIES", "SearchConfig",
    "SpaceError", "SpaceSize", "SpaceSpec", "StrategyError", "StrategySpec", "build_fixed", "build_model",
    "build_space", "check_pair", "check_plan", "load_architecture", "load_model", "nas_config", "retrain_epochs",
    "run_nas", "search", "search_dataset", "space_size", "stored_nas",
]

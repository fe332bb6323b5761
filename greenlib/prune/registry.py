"""The paper's six pruners, found by name (the names of ``config.SECTIONS["pruning"]["pruners"]``).

Adding a pruner is one entry here (and its test). Section 4.1 of the paper, following NNI's
practice, runs two kinds:

- one-shot (``l1``, ``l2``, ``fpgm``): masks from the trained weights alone, at once;
- iterative (``apoz``, ``taylor``, ``activation_mean``): masks from statistics that an evaluator
  collects while it trains the masked model, updated several times (see :mod:`.schedule`).

``build(model, config_list, evaluator, training_steps)`` returns the NNI 3.0 pruner; one-shot
builders ignore the last two arguments.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

from nni.compression.base.compressor import Pruner
from nni.compression.pruning import L1NormPruner, L2NormPruner, TaylorPruner

from .activation import ActivationMeanPruner, APoZPruner
from .fpgm import FPGMPruner

SCHEDULES = ("one-shot", "iterative")


@dataclass(frozen=True)
class PrunerSpec:
    """One pruner: its config name, the paper's name for it, its schedule and its criterion."""

    name: str
    method: str  # as Table 5 prints it ("APoZ Pruner"); paper.method_label drops " Pruner"
    schedule: str  # one of SCHEDULES
    criterion: str  # one line: what ranks the filters
    build: Callable[..., Pruner]

    @property
    def iterative(self) -> bool:
        return self.schedule == "iterative"


def _one_shot(cls) -> Callable[..., Pruner]:
    def build(model, config_list, evaluator=None, training_steps=None) -> Pruner:
        return cls(model, config_list)
    return build


def _iterative(cls) -> Callable[..., Pruner]:
    def build(model, config_list, evaluator, training_steps: int) -> Pruner:
        return cls(model, config_list, evaluator, training_steps=training_steps)
    return build


PRUNERS: Mapping[str, PrunerSpec] = MappingProxyType({
    "l1": PrunerSpec("l1", "L1 Filter Pruner", "one-shot", "L1 norm of each filter's weights (Li et al. 2017)",
                     _one_shot(L1NormPruner)),
    "l2": PrunerSpec("l2", "L2 Filter Pruner", "one-shot", "L2 norm of each filter's weights (Li et al. 2017)",
                     _one_shot(L2NormPruner)),
    "fpgm": PrunerSpec("fpgm", "FPGM Pruner", "one-shot",
                       "summed distance of each filter to the layer's other filters: the filters nearest the "
                       "geometric median go (He et al. 2019)", _one_shot(FPGMPruner)),
    "apoz": PrunerSpec("apoz", "APoZ Pruner", "iterative",
                       "average percentage of zeros of each channel's ReLU'd output (Hu et al. 2016)",
                       _iterative(APoZPruner)),
    "taylor": PrunerSpec("taylor", "TaylorFO Pruner", "iterative",
                         "first-order Taylor importance, sum of (weight x gradient)^2 (Molchanov et al. 2019)",
                         _iterative(TaylorPruner)),
    "activation_mean": PrunerSpec("activation_mean", "Activation Mean Pruner", "iterative",
                                  "mean of each channel's ReLU'd output (Molchanov et al. 2017)",
                                  _iterative(ActivationMeanPruner)),
})


def get_pruner(name: Any) -> PrunerSpec:
    """The spec of pruner ``name``; ValueError naming it and the accepted names otherwise."""
    if not isinstance(name, str) or name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}; accepted: {', '.join(PRUNERS)}")
    return PRUNERS[name]

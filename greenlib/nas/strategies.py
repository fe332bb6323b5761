"""One-shot NAS strategies (NNI 3.0): name -> :class:`StrategySpec`. Adding one is one entry here.

Both run NNI's one-shot Lightning modules in this process (no NNI manager, no web UI): every
training step first updates the architecture parameters on a batch of the held-out half of the
training set, then the supernet's weights on a batch of the other half (DARTS' first-order scheme;
Proxyless samples one path per step and updates its binary gates instead of a weighted sum).

Pairs known not to work are listed per strategy (``incompatible``) and refused before anything is
built or trained. ENAS (``nni.nas.strategy.ENAS``) is not offered: it needs ``tianshou``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from .spaces import SPACES, SpaceError


class StrategyError(ValueError):
    """An unknown strategy, or a (strategy, space) pair that is known not to work; one line."""


# DARTS' search recipe (Liu et al. 2019, and NNI's DARTS example): architecture step with Adam
# lr 3e-4, betas (0.5, 0.999), weight decay 1e-3 (NNI's defaults), weight gradients clipped at 5.
ARC_LR = 3e-4
GRADIENT_CLIP = 5.0


def _darts(**kwargs: Any):
    from nni.nas.strategy import DARTS

    return DARTS(arc_learning_rate=ARC_LR, gradient_clip_val=GRADIENT_CLIP, log_prob_every_n_step=10 ** 9, **kwargs)


def _proxyless(**kwargs: Any):
    from nni.nas.strategy import Proxyless

    return Proxyless(arc_learning_rate=ARC_LR, gradient_clip_val=GRADIENT_CLIP, log_prob_every_n_step=10 ** 9,
                     **kwargs)


@dataclass(frozen=True)
class StrategySpec:
    """A one-shot strategy: how NNI builds it, the space the paper ran it on, and pairs that fail."""

    name: str
    method: str  # the paper's name (Table 3's method column)
    reference: str
    make: Callable[..., Any]  # -> nni.nas.strategy.Strategy
    space: str  # the paper's space for this strategy (the default)
    incompatible: Mapping[str, str] = field(default_factory=dict)  # space -> why it fails


STRATEGIES: Mapping[str, StrategySpec] = MappingProxyType({
    "darts": StrategySpec("darts", "Darts", "Liu et al., DARTS: Differentiable Architecture Search, ICLR 2019",
                          _darts, "darts"),
    "proxyless": StrategySpec(
        "proxyless", "ProxylessNAS",
        "Cai et al., ProxylessNAS: Direct Neural Architecture Search on Target Task and Hardware, ICLR 2019",
        _proxyless, "proxyless",
        incompatible={"darts": "NNI 3.0's Proxyless cannot mix the DARTS cell's inputs, which differ in "
                               "resolution (RuntimeError: stack expects each tensor to be equal size)"}),
})


def get(name: str) -> StrategySpec:
    """The strategy ``name``; StrategyError naming it and the accepted ones."""
    if name not in STRATEGIES:
        raise StrategyError(f"unknown NAS strategy {name!r}; accepted: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def check_pair(strategy: str, space: str | None = None) -> tuple[StrategySpec, str]:
    """The strategy and the space it will search (``None``: the paper's for it).

    Raises StrategyError for an unknown strategy or a known-broken pair, SpaceError for an
    unknown space, before anything is built.
    """
    spec = get(strategy)
    space = spec.space if space is None else space
    if space not in SPACES:
        raise SpaceError(f"unknown search space {space!r}; accepted: {', '.join(SPACES)}")
    if space in spec.incompatible:
        works = [s for s in SPACES if s not in spec.incompatible]
        raise StrategyError(f"strategy {strategy!r} does not work on the {space!r} space: "
                            f"{spec.incompatible[space]}; accepted spaces for it: {', '.join(works)}")
    return spec, space

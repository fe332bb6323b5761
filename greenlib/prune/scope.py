"""Which layers lose filters: the pruning scope, found by name (``config.SECTIONS["pruning"]["scope"]``).

- ``pruned-a``: the layers NNI 2.x's pruning example names, Li et al.'s "VGG-16-pruned-A"
  (NNI ``examples/model_compress/pruning/basic_pruners_torch.py``, v2.3 lines 244-256; the same
  list in v2.4-v2.6 lines 264-276 and in ``pruning/legacy/`` from v2.7): Conv2d layers named
  ``feature.0, feature.24, feature.27, feature.30, feature.34, feature.37`` at ``sparsity``. The
  names are module names of NNI's VGG (``nni-vgg16``: convs 1 and 8-12; the 13th, ``feature.40``,
  is kept). On ``nni-vgg19`` three of those names are BatchNorms, which the example's
  ``op_types: ['Conv2d']`` skips, so the example prunes convs 1, 9 and 10 there; so do we.
  The list names no layer of any other model: there ``pruned-a`` prunes every Conv2d, as
  ``every-conv``, and :func:`resolve_scope` says so.
- ``every-conv``: every Conv2d at ``sparsity``, convs joined by a residual add sharing one
  dependency group (:func:`greenlib.prune.speedup.config_list`).

Adding a scope is one entry of :data:`SCOPES` (a function of the zoo name and the model giving the
convs to prune, or None for every conv).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

from torch import nn

# basic_pruners_torch.py (NNI v2.3) line 255: the op_names of its config list, in its order.
NNI_EXAMPLE_LAYERS: tuple[str, ...] = ("feature.0", "feature.24", "feature.27", "feature.30", "feature.34",
                                       "feature.37")
# The zoo models whose module names are those of the VGG the example builds (its line 111: VGG(depth=16)).
NNI_EXAMPLE_MODELS: tuple[str, ...] = ("nni-vgg16", "nni-vgg19")


@dataclass(frozen=True)
class ScopeChoice:
    """What a scope gives one model: the convs to prune (None: every Conv2d), and in words."""

    requested: str  # the scope asked for
    applied: str  # the scope that was applied (``every-conv`` where ``pruned-a`` names no layer)
    layers: tuple[str, ...] | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"scope_requested": self.requested, "scope_applied": self.applied,
                "pruned_layers": list(self.layers) if self.layers is not None else None, "scope_note": self.note}


def _convs(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _every_conv(model_name: str, model: nn.Module) -> tuple[tuple[str, ...] | None, str]:
    return None, f"every Conv2d of {model_name} ({len(_convs(model))}) at the same ratio, dependency-aware"


def _pruned_a(model_name: str, model: nn.Module) -> tuple[tuple[str, ...] | None, str]:
    if model_name not in NNI_EXAMPLE_MODELS:
        return None, (f"NNI's example names no layer of {model_name} (its list is VGG's): every Conv2d "
                      f"({len(_convs(model))}) at the same ratio, dependency-aware, as every-conv")
    convs = _convs(model)
    layers = tuple(n for n in NNI_EXAMPLE_LAYERS if n in convs)  # the example's op_types=['Conv2d'] filter
    ordinals = ", ".join(str(convs.index(n) + 1) for n in layers)
    skipped = [n for n in NNI_EXAMPLE_LAYERS if n not in layers]
    extra = f"; {', '.join(skipped)} are not convs here and are skipped, as in NNI's example" if skipped else ""
    return layers, (f"NNI's example layers (Li et al.'s VGG-16-pruned-A): convs {ordinals} of {len(convs)} "
                    f"({', '.join(layers)}){extra}")


@dataclass(frozen=True)
class Scope:
    name: str
    description: str
    layers: Callable[[str, nn.Module], tuple[tuple[str, ...] | None, str]]


SCOPES: Mapping[str, Scope] = MappingProxyType({
    "pruned-a": Scope("pruned-a", "NNI 2.x example's layers (VGG-16-pruned-A); every conv where it names none",
                      _pruned_a),
    "every-conv": Scope("every-conv", "every Conv2d, dependency-aware", _every_conv),
})


def check_scope(scope: Any) -> str:
    """``scope`` if it names a scope of :data:`SCOPES`, else ValueError naming it and the accepted ones."""
    if not isinstance(scope, str) or scope not in SCOPES:
        raise ValueError(f"unknown pruning scope {scope!r}; accepted: {', '.join(SCOPES)}")
    return scope


def resolve_scope(scope: Any, model_name: str, model: nn.Module) -> ScopeChoice:
    """The convs ``scope`` prunes in ``model`` (zoo name ``model_name``); ValueError for an unknown scope."""
    check_scope(scope)
    layers, note = SCOPES[scope].layers(model_name, model)
    applied = scope if layers is not None or scope == "every-conv" else "every-conv"
    return ScopeChoice(scope, applied, layers, note)

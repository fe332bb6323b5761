"""From a model and a sparsity to NNI's config list, and from masks to a physically smaller model.

- :func:`config_list`: every ``Conv2d`` (or those a scope names, :mod:`.scope`) loses ``sparsity``
  of its filters. Convs whose outputs are added (residual blocks) share one
  ``dependency_group_id`` so they drop the same channels (else the sum would not line up after
  speed-up); each BatchNorm right after a pruned conv is
  ``align``-ed to it, so the masked model zeroes exactly the channels speed-up removes (without
  this, a masked conv's BatchNorm still emits its shift and the masked and sped-up models differ).
- :func:`speedup_model`: NNI 3.0's ``ModelSpeedup`` replaces each layer by a smaller one; the result is
  put back in eval mode (the replaced layers come back in training mode) and returned.

Graphs come from NNI's ``concrete_trace`` with its operator patcher off: the patcher re-executes
function sources without ``from __future__ import annotations`` and chokes on the zoo's
``tuple[...]`` annotations; proxies alone trace our models (no data-dependent control flow).
"""
from __future__ import annotations

import contextlib
import inspect
import io
import logging
from typing import Any, Dict, List, Sequence

import torch
from nni.common.concrete_trace_utils import concrete_trace
from nni.compression.speedup import ModelSpeedup, auto_set_denpendency_group_ids
from nni.compression.speedup.replacer import Replacer
from torch import nn
from torch.fx import GraphModule
from torch.fx.passes.shape_prop import ShapeProp

from .backend import SPEEDUP_LOGGER

_logger = logging.getLogger(__name__)

MASKS = Dict[str, Dict[str, torch.Tensor]]


def trace(model: nn.Module, example: torch.Tensor) -> GraphModule:
    """The model's graph (NNI's concrete trace), with tensor shapes attached to its nodes.

    Shapes matter: NNI's dependency analysis stops at any function node without them, which
    hides residual dependencies behind a functional ReLU.
    """
    was_training = model.training
    first_arg = next(iter(inspect.signature(model.forward).parameters))  # "x" for the zoo's models
    gm = concrete_trace(model, {first_arg: example}, use_operator_patch=False)
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    model.train(was_training)
    return gm


def conv_bn_pairs(gm: GraphModule) -> dict[str, str]:
    """``{batchnorm name: conv name}`` for each BatchNorm2d whose only input is a Conv2d used once."""
    pairs = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1
                and isinstance(gm.get_submodule(src.target), nn.Conv2d)):
            pairs[node.target] = src.target
    return pairs


def config_list(model: nn.Module, sparsity: float, example: torch.Tensor,
                gm: GraphModule | None = None, layers: Sequence[str] | None = None) -> List[Dict[str, Any]]:
    """NNI 3.0 config list: every Conv2d (or only the Conv2d named in ``layers``) at ``sparsity``
    (filters), residual convs grouped, each conv's BatchNorm aligned to it.

    ``sparsity`` must lie in (0, 1); ``layers``, if given, must name Conv2d modules of ``model``
    (ValueError naming the others).
    """
    check_sparsity(sparsity)
    selected: Dict[str, Any] = {"op_types": ["Conv2d"], "sparse_ratio": float(sparsity)}
    if layers is not None:
        convs_here = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        bad = [n for n in layers if n not in convs_here]
        if bad or not layers:
            raise ValueError(f"layers {bad or list(layers)} are not Conv2d modules of the model; "
                             f"its convs: {', '.join(sorted(convs_here))}")
        selected["op_names"] = list(layers)
    gm = gm if gm is not None else trace(model, example)
    convs = auto_set_denpendency_group_ids(gm, [selected])
    pruned = {name for c in convs for name in c["op_names"]}
    aligned = [{"op_names": [bn], "target_names": ["weight", "bias"],
                "target_settings": {t: {"align": {"module_name": conv, "target_name": "weight", "dims": [0]}}
                                    for t in ("weight", "bias")}}
               for bn, conv in sorted(conv_bn_pairs(gm).items()) if conv in pruned]
    return sorted(convs, key=lambda c: c["op_names"][0]) + aligned


def check_sparsity(sparsity: Any) -> float:
    """``sparsity`` as a float if it lies strictly between 0 and 1, else ValueError naming it."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise ValueError(f"sparsity={sparsity!r}: the fraction of filters removed must lie in (0, 1)")
    return float(sparsity)


class _ParameterFreeReplacer(Replacer):
    """``nn.Identity`` (a residual shortcut) holds no weights and passes any width through:
    nothing to replace. Without this NNI logs an ERROR for each one (and carries on)."""

    def replace_modules(self, speedup: ModelSpeedup) -> None:
        for node, info in speedup.node_infos.items():
            if node.op == "call_module" and isinstance(speedup.fetch_attr(node.target), nn.Identity):
                info.replaced = True


def speedup_model(model: nn.Module, masks: MASKS, example: torch.Tensor, gm: GraphModule | None = None) -> nn.Module:
    """Replace ``model``'s masked layers by smaller ones, in place; returns ``model`` in eval mode.

    ``model`` must be unwrapped (``pruner.unwrap_model()``) and ``masks`` NNI's
    ``{module: {"weight": mask, ...}}``; ``gm`` its :func:`trace` (made here if None; one made
    before pruning serves, the pruner having wrapped and unwrapped the same modules). ModelSpeedup
    builds its replacement layers in training mode, so eval() is applied again before the model is
    returned: accuracy and IEC are measured on the smaller model in eval mode.
    """
    gm = gm if gm is not None else trace(model, example)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # NNI's mask-conflict step prints "0 Filter" to stdout
        ModelSpeedup(model, example, masks, graph_module=gm, customized_replacers=[_ParameterFreeReplacer()],
                     logger=SPEEDUP_LOGGER).speedup_model()
    if out.getvalue().strip():
        _logger.debug("ModelSpeedup printed: %s", out.getvalue().strip())
    return model.eval()

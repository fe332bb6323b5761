"""APoZ and Activation Mean pruners, built on NNI 3.0's own pruning framework.

NNI 3.0 dropped the activation-based pruners the paper used (NNI 2.x's ActivationAPoZRankPruner
and ActivationMeanRankPruner). These two classes bring them back as NNI 3.0 :class:`Pruner`
subclasses, shaped like NNI 3.0's own ``TaylorPruner``: statistics are collected by forward hooks
that the pruner registers through the evaluator (``Evaluator.register_hooks``) while the
evaluator trains; masks are generated after ``training_steps`` optimizer steps by NNI's own
``generate_sparsity`` (ratios, dependency groups and aligned targets as for every NNI pruner);
and they plug into NNI's schedulers (``LinearPruner``/``AGPPruner``) through ``interval_steps``
and ``total_times`` exactly as ``TaylorPruner`` does.

The statistics follow NNI 2.x: each pruned layer's output (a Conv2d's, masks applied) goes
through ReLU, then per output channel

- APoZ (Hu et al. 2016): importance = 1 - the fraction of zeros over images and positions
  (a filter whose activations are mostly zero is pruned first);
- Activation Mean (Molchanov et al. 2017, sec. 2.2): importance = the mean activation.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List

import torch
from nni.compression.base.compressor import Pruner
from nni.compression.base.wrapper import ModuleWrapper
from nni.compression.pruning.tools import generate_sparsity, is_active_target
from nni.compression.utils import Evaluator, ForwardHook
from torch import Tensor, nn

_logger = logging.getLogger(__name__)


class ActivationPruner(Pruner):
    """Prunes output channels of Conv2d/Linear layers ranked by a statistic of ReLU(output).

    Parameters are NNI 3.0's: ``model``, ``config_list`` (e.g. ``[{"op_types": ["Conv2d"],
    "sparse_ratio": 0.5}]``), an ``evaluator`` that trains the model, and ``training_steps``: the
    optimizer steps over which activations are collected before masks are generated.
    Subclasses define :meth:`channel_totals` and :meth:`importance`.
    """

    def __init__(self, model: nn.Module, config_list: List[Dict], evaluator: Evaluator, training_steps: int,
                 existed_wrappers: Dict[str, ModuleWrapper] | None = None):
        if not isinstance(training_steps, int) or training_steps < 1:
            raise ValueError(f"training_steps={training_steps!r}: must be an int >= 1")
        super().__init__(model=model, config_list=config_list, evaluator=evaluator, existed_wrappers=existed_wrappers)
        self.evaluator: Evaluator
        self.training_steps = training_steps
        self._current_step = 0
        self.hooks: Dict[str, ForwardHook] = {}
        # read by register_trigger and set by NNI's schedulers (LinearPruner, AGPPruner), as in TaylorPruner
        self.interval_steps = training_steps
        self.total_times: int | str = 1

    # -- the criterion -------------------------------------------------------------------------
    def channel_totals(self, activation: Tensor) -> Tensor:
        """Per-channel sum over one batch of the quantity averaged later (``activation`` is ReLU'd)."""
        raise NotImplementedError

    def importance(self, mean: Tensor) -> Tensor:
        """Per-channel importance (higher is kept) from the per-channel mean of :meth:`channel_totals`."""
        raise NotImplementedError

    @staticmethod
    def _channel_dims(t: Tensor) -> list[int]:
        return [d for d in range(t.dim()) if d != 1]  # (N, C, ...): channels are dim 1

    # -- NNI's Pruner interface ----------------------------------------------------------------
    def _collect_data(self) -> Dict[str, Dict[str, Tensor]]:
        data: Dict[str, Dict[str, Tensor]] = {}
        for module_name, hook in self.hooks.items():
            if hook.buffer and hook.buffer[1] > 0:
                total, count = hook.buffer
                data[module_name] = {"weight": self.importance(total / count)}
        return data

    def _calculate_metrics(self, data: Dict[str, Dict[str, Tensor]]) -> Dict[str, Dict[str, Tensor]]:
        # Each channel's importance, spread over its weight block, then shrunk by the target's scaler:
        # the metric has exactly the shape NNI's generate_sparsity expects for this target.
        metrics: Dict[str, Dict[str, Tensor]] = {}
        for module_name, module_data in data.items():
            space = self._target_spaces[module_name]["weight"]
            per_channel = module_data["weight"]
            weight = space.target
            block = per_channel.view(-1, *([1] * (weight.dim() - 1))).expand_as(weight)
            metrics[module_name] = {"weight": space._scaler.shrink(block, keepdim=True)}
        return metrics

    def _generate_sparsity(self, metrics: Dict[str, Dict[str, Tensor]]) -> Dict[str, Dict[str, Tensor]]:
        return generate_sparsity(metrics, self._target_spaces)

    def _register_hooks(self, evaluator: Evaluator) -> None:
        def collector(buffer: List) -> Callable[[nn.Module, Any, Tensor], None]:
            # buffer = [per-channel running total, number of values per channel summed so far]
            def collect(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
                if self._current_step >= self.training_steps:
                    return
                activation = torch.relu(output.detach())
                if not buffer:
                    buffer.extend([torch.zeros(activation.shape[1], device=activation.device), 0])
                buffer[0] += self.channel_totals(activation).float()
                buffer[1] += activation.numel() // activation.shape[1]
            return collect

        hooks = []
        for module_name, spaces in self._target_spaces.items():
            space = spaces.get("weight")
            if space is None or not is_active_target(space):
                continue  # e.g. a BatchNorm aligned to its conv: it follows, it is not ranked
            # NNI 3.0 keeps the module in the model and redirects its forward to the wrapper,
            # so the hook goes on the module itself: it sees the masked output.
            hook = ForwardHook(self._module_wrappers[module_name].module, module_name, collector)
            hooks.append(hook)
            self.hooks[module_name] = hook
        evaluator.register_hooks(hooks)

    def _register_trigger(self, evaluator: Evaluator) -> None:
        # TaylorPruner's rule: masks after `training_steps` steps; with a scheduler, statistics are
        # cleared and collected again every `interval_steps` until `total_times` masks were made.
        if not (self.interval_steps >= self.training_steps or self.interval_steps < 0):
            raise ValueError(f"interval_steps={self.interval_steps} < training_steps={self.training_steps}")
        self._remaining_times = self.total_times

        def optimizer_task() -> None:
            self._current_step += 1
            if self._current_step == self.training_steps:
                self.update_masks(self.generate_masks())
                if isinstance(self._remaining_times, int):
                    self._remaining_times -= 1
                _logger.debug("%s generated masks, %s more", type(self).__name__, self._remaining_times)
            if self._current_step == self.interval_steps and \
                    (self._remaining_times == "unlimited" or self._remaining_times > 0):
                self._current_step = 0
                for hook in self.hooks.values():
                    hook.buffer.clear()

        evaluator.patch_optimizer_step(before_step_tasks=[], after_step_tasks=[optimizer_task])

    def _single_compress(self, max_steps: int | None, max_epochs: int | None) -> None:
        if max_steps is not None or max_epochs is not None:
            raise ValueError(f"{type(self).__name__}.compress() trains for training_steps; "
                             "give neither max_steps nor max_epochs")
        self._fusion_compress(self.training_steps, None)

    def _fuse_preprocess(self, evaluator: Evaluator) -> None:
        self._register_hooks(evaluator)
        self._register_trigger(evaluator)

    def _fuse_postprocess(self, evaluator: Evaluator) -> None:
        pass

    def compress(self, max_steps: int | None = None, max_epochs: int | None = None):
        return super().compress(max_steps, max_epochs)


class APoZPruner(ActivationPruner):
    """Average Percentage of Zeros (Hu et al. 2016, "Network Trimming"): prunes the channels whose
    ReLU'd outputs are most often zero. Importance = 1 - APoZ."""

    def channel_totals(self, activation: Tensor) -> Tensor:
        return (activation == 0).sum(dim=self._channel_dims(activation))

    def importance(self, mean: Tensor) -> Tensor:
        return 1.0 - mean  # mean = APoZ, the fraction of zeros


class ActivationMeanPruner(ActivationPruner):
    """Mean activation (Molchanov et al. 2017, sec. 2.2): prunes the channels with the smallest
    mean ReLU'd output."""

    def channel_totals(self, activation: Tensor) -> Tensor:
        return activation.sum(dim=self._channel_dims(activation))

    def importance(self, mean: Tensor) -> Tensor:
        return mean

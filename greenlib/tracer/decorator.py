"""The paper's decorator (Appendix B): ``@GPUTracer(mode=...)`` makes a function return
``(original_result, gpu_info)``.

::

    @GPUTracer(mode="distillation", gpu_num=(0,), sampling_rate=0.1, verbose=True)
    def train_distill_epoch(...):
        ...

    actual_results, gpu_info = train_distill_epoch(...)
    gpu_info["energy_wh"], gpu_info["mean_power_w"], gpu_info["samples"]  # DataFrame
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Sequence

from .core import Tracer, _check_number

MODES: tuple[str, ...] = ("distillation", "pruning", "quantization", "nas")


class GPUTracer:
    """Trace every call of the decorated function in its own :class:`Tracer`.

    ``mode`` labels the method family (one of :data:`MODES`). ``gpu_num`` are CUDA ordinals; the
    default None traces every visible GPU (the paper wrote ``(0,)``, the same on a one-GPU machine)
    or the CPU where there is none. ``sampling_rate`` is the sampling interval in seconds (the
    paper's name). Other keyword arguments go to :class:`Tracer` (e.g. ``source="smi"`` for the
    paper's exact method). ``save_dir``: save each call's trace there.

    ``gpu_info`` is the window's :class:`WindowSummary` as a dict plus ``mode``, ``source`` and
    ``samples`` (the DataFrame of every sample). The tracer of the last call is ``last_tracer``.
    """

    all_modes = MODES  # the paper's attribute name

    def __init__(self, mode: str, gpu_num: Sequence[int] | None = None, sampling_rate: float = 0.1,
                 verbose: bool = False, save_dir: str | Path | None = None, **tracer_kwargs: Any):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not accepted; accepted: {', '.join(MODES)}")
        _check_number("sampling_rate", sampling_rate, positive=True)
        self.mode, self.gpu_num, self.sampling_rate = mode, gpu_num, float(sampling_rate)
        self.verbose, self.save_dir, self.tracer_kwargs = verbose, save_dir, tracer_kwargs
        self.last_tracer: Tracer | None = None

    def __call__(self, func: Callable) -> Callable:
        name = getattr(func, "__qualname__", getattr(func, "__name__", "traced"))

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
            tracer = Tracer(gpus=self.gpu_num, interval_s=self.sampling_rate, verbose=self.verbose,
                            **self.tracer_kwargs)
            self.last_tracer = tracer
            with tracer:
                with tracer.window(name):
                    result = func(*args, **kwargs)
            if self.save_dir is not None:
                tracer.save(self.save_dir)
            info = {"mode": self.mode, "source": tracer.source_name, **tracer.windows[name].to_dict(),
                    "samples": tracer.samples()}
            return result, info

        return wrapper

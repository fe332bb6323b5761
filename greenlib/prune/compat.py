"""Two import-time fixes that let NNI 3.0's ModelSpeedup run on torch >= 2.3 (NNI issue #5768).

NNI 3.0 (its last release) traces a model with its own ``concrete_trace`` before speeding it up.
Two changes in torch broke that tracer; upstream never released a fix:

1. torch 2.3 renamed the tensor base class ``torch._C._TensorBase`` to ``TensorBase`` (the old
   name stays as an alias, but its methods' ``__qualname__`` now start with ``TensorBase.``).
   The tracer recognises tensor methods by ``__qualname__.startswith('_TensorBase')``; the others
   fall through to a branch that reads ``func.__module__`` (None for C methods) and fails with
   ``AttributeError: 'NoneType' object has no attribute 'startswith'`` (the symptom of #5768).
   Fix: the tracer's table of leaf functions gets, for each such method, a thin alias that calls
   it and carries the old qualname, so the tracer wraps ``torch.Tensor.<name>`` as it did before.
2. torch's ``Node.is_impure`` gained an argument (``impure_random``) that ``Graph.eliminate_dead_code``
   passes; the tracer's one-argument replacement then raises ``TypeError``. Fix: a replacement that
   accepts and ignores the extra arguments, as the tracer's own did.

And one for Python >= 3.12 (seen on the GPU machine's Python 3.12; not an NNI issue we can cite):
the tracer decorates a method with ``functools.wraps(type)``; since 3.12 ``wraps`` copies
``__type_params__``, which on ``type`` itself is a descriptor, not a tuple, and the copy raises
``TypeError: __type_params__ must be set to a tuple``. Fix: ``functools.update_wrapper`` skips
that one attribute when the wrapped object is ``type`` (every other call is unchanged).

:func:`apply` is idempotent and runs when :mod:`greenlib.prune` is imported; nothing in
site-packages is edited. :func:`needed` says whether this torch needs each fix.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch

_OLD_PREFIX = "_TensorBase."
_NEW_PREFIX = "TensorBase."


class TensorBaseAlias:
    """A tensor method under the pre-torch-2.3 qualname (``_TensorBase.<name>``) NNI's tracer expects."""

    def __init__(self, method: Callable):
        self.method = method
        self.__name__ = method.__name__
        self.__qualname__ = _OLD_PREFIX + method.__name__
        self.__doc__ = getattr(method, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.method(*args, **kwargs)

    def __repr__(self) -> str:
        return f"TensorBaseAlias({self.__qualname__})"


def needed() -> dict[str, bool]:
    """Which of the two fixes this torch needs: ``tensorbase_qualname`` and ``is_impure_args``."""
    import inspect

    from torch.fx import Node

    renamed = torch._C.TensorBase.add.__qualname__.startswith(_NEW_PREFIX) if hasattr(torch._C, "TensorBase") \
        else False
    extra_args = len(inspect.signature(Node.is_impure).parameters) > 1
    return {"tensorbase_qualname": renamed, "is_impure_args": extra_args}


def _fix_tensorbase_qualnames(tracer_cls) -> int:
    table = tracer_cls.default_autowrap_leaf_function
    renamed = [f for f in table if getattr(f, "__qualname__", "").startswith(_NEW_PREFIX)
               and not isinstance(f, TensorBaseAlias)]
    for func in renamed:
        table[TensorBaseAlias(func)] = table.pop(func)
    return len(renamed)


def _fix_is_impure(tracer_module) -> bool:
    original = tracer_module.node_is_impure_wrapper
    if getattr(original, "_greenlib_fixed", False):
        return False

    @functools.wraps(original)
    def node_is_impure_wrapper(node, *args: Any, **kwargs: Any) -> bool:
        return original(node)  # the tracer's purity rule; torch's new arguments do not change it

    node_is_impure_wrapper._greenlib_fixed = True
    tracer_module.node_is_impure_wrapper = node_is_impure_wrapper  # concrete_trace reads this global
    return True


def _fix_wraps_type() -> bool:
    original = functools.update_wrapper
    if getattr(original, "_greenlib_fixed", False):
        return False

    def update_wrapper(wrapper, wrapped, assigned=functools.WRAPPER_ASSIGNMENTS, updated=functools.WRAPPER_UPDATES):
        if wrapped is type:
            assigned = tuple(a for a in assigned if a != "__type_params__")
        return original(wrapper, wrapped, assigned, updated)

    update_wrapper._greenlib_fixed = True
    functools.update_wrapper = update_wrapper  # functools.wraps looks it up at call time
    return True


def wraps_type_broken() -> bool:
    """Whether ``functools.wraps(type)`` fails on this Python (3.12 and later)."""
    try:
        functools.wraps(type)(lambda self, instance: None)
        return False
    except TypeError:
        return True


@functools.cache
def apply() -> dict[str, int | bool]:
    """Apply the fixes this torch and Python need (once per process); returns what was changed."""
    from nni.common.concrete_trace_utils import concrete_tracer

    need = needed()
    return {"tensorbase_methods_aliased": _fix_tensorbase_qualnames(concrete_tracer.ConcreteTracer)
            if need["tensorbase_qualname"] else 0,
            "is_impure_wrapped": _fix_is_impure(concrete_tracer) if need["is_impure_args"] else False,
            "wraps_type_fixed": _fix_wraps_type() if wraps_type_broken() else False}

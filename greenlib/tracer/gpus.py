"""Which physical GPU a CUDA ordinal is: ``CUDA_VISIBLE_DEVICES`` read the way CUDA reads it.

The tracer takes GPUs as the traced process sees them (``cuda:0`` is ordinal 0); NVML and
nvidia-smi number *all* GPUs of the machine in PCI bus order. ``CUDA_VISIBLE_DEVICES`` is a comma
list of physical indices, ``GPU-`` UUID prefixes or ``MIG-`` UUIDs (``MIG-<uuid>`` from CUDA 11.1+, found
through NVML; ``MIG-GPU-<gpu uuid>/<gi>/<ci>`` from CUDA 11.0, read from the name); CUDA stops at the
first entry it cannot resolve (so ``-1`` hides every GPU). Without the variable every GPU is visible in NVML
order, which matches CUDA's only with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or identical GPUs.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

from .base import TracerWarning


def visible_physical(env_value: str | None, uuids: Sequence[str],
                     mig_parent: Callable[[str], int] | None = None) -> list[int]:
    """Physical indices of the GPUs the process sees, in CUDA ordinal order.

    ``env_value`` is ``CUDA_VISIBLE_DEVICES`` (None: unset), ``uuids`` the UUID of each physical
    GPU in NVML order, ``mig_parent`` maps a ``MIG-`` UUID to its GPU's physical index (NVML only).
    Entries after the first unresolvable one are ignored, as CUDA does, with a TracerWarning.
    Raises ValueError for an ambiguous UUID prefix, a repeated GPU, or a MIG entry without NVML.
    """
    count = len(uuids)
    if env_value is None:
        return list(range(count))
    out: list[int] = []
    for token in (t.strip() for t in env_value.split(",")):
        idx = _resolve(token, uuids, mig_parent, env_value)
        if idx is None:
            if token:
                warnings.warn(f"CUDA_VISIBLE_DEVICES={env_value!r}: entry {token!r} matches no GPU of the "
                              f"{count} present; it and the entries after it are ignored (as CUDA does)",
                              TracerWarning, stacklevel=3)
            break
        if idx in out:
            raise ValueError(f"CUDA_VISIBLE_DEVICES={env_value!r} names physical GPU {idx} twice")
        out.append(idx)
    return out


def _resolve(token: str, uuids: Sequence[str], mig_parent, env_value: str) -> int | None:
    if not token:
        return None
    if token.lstrip("+-").isdigit():
        i = int(token)
        return i if 0 <= i < len(uuids) else None
    upper = token.upper()
    if upper.startswith("MIG-GPU-"):  # CUDA 11.0-11.x form: MIG-GPU-<uuid of its GPU>/<gi>/<ci>
        parent = upper[len("MIG-"):].split("/")[0]
        hits = [i for i, u in enumerate(uuids) if u and u.upper() == parent]
        return hits[0] if hits else None
    if upper.startswith("MIG-"):
        if mig_parent is None:
            raise ValueError(f"CUDA_VISIBLE_DEVICES={env_value!r} names MIG instance {token!r}; mapping it to "
                             "its GPU needs NVML (source 'nvml' or 'counter'), not nvidia-smi")
        try:
            return int(mig_parent(token))
        except Exception:  # NVML does not know that UUID: CUDA would not either
            return None
    if upper.startswith("GPU-"):
        hits = [i for i, u in enumerate(uuids) if u and u.upper().startswith(upper)]
        if len(hits) > 1:
            raise ValueError(f"CUDA_VISIBLE_DEVICES entry {token!r} is ambiguous: it prefixes the UUIDs of "
                             f"physical GPUs {hits}; give more of the UUID")
        return hits[0] if hits else None
    return None


def select(gpus: Sequence[int] | None, visible: Sequence[int], env_value: str | None) -> tuple[list[int], list[int]]:
    """``(cuda_ordinals, physical_indices)`` for the requested ``gpus`` (None: every visible GPU).

    Raises ValueError naming the ordinal and the accepted ones when one is not visible.
    """
    if gpus is None:
        return list(range(len(visible))), list(visible)
    for g in gpus:
        if not 0 <= g < len(visible):
            where = "" if env_value is None else f" with CUDA_VISIBLE_DEVICES={env_value!r}"
            accepted = ", ".join(map(str, range(len(visible)))) or "none (no GPU visible)"
            raise ValueError(f"GPU {g} is not present: this process sees {len(visible)} GPU(s){where}; "
                             f"accepted CUDA ordinals: {accepted}")
    return list(gpus), [visible[g] for g in gpus]


def check_gpus_arg(gpus) -> list[int] | None:
    """Validate the ``gpus`` argument: None or a sequence of distinct non-negative ints."""
    if gpus is None:
        return None
    if isinstance(gpus, (str, bytes)) or not isinstance(gpus, Sequence):
        raise ValueError(f"gpus={gpus!r} must be a sequence of CUDA ordinals such as (0,) or (0, 1), or None")
    out = []
    for g in gpus:
        if isinstance(g, bool) or not isinstance(g, int) or g < 0:
            raise ValueError(f"gpus={gpus!r}: {g!r} is not a CUDA ordinal (a non-negative int)")
        if g in out:
            raise ValueError(f"gpus={gpus!r} names GPU {g} twice")
        out.append(g)
    if not out:
        raise ValueError("gpus=() is empty; give at least one CUDA ordinal, or None for every visible GPU")
    return out


def warn_if_order_ambiguous(names: Sequence[str], device_order: str | None, env_value: str | None) -> None:
    """CUDA's default order (fastest first) may differ from NVML's PCI order on mixed machines."""
    if len(set(names)) > 1 and (device_order or "").upper() != "PCI_BUS_ID" and env_value is None:
        warnings.warn(f"GPUs of different models ({', '.join(sorted(set(names)))}) and CUDA_DEVICE_ORDER is "
                      "not PCI_BUS_ID: CUDA ordinals may not match NVML indices; set "
                      "CUDA_DEVICE_ORDER=PCI_BUS_ID", TracerWarning, stacklevel=3)

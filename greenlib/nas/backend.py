"""The one place that imports NNI's NAS modules and quiets NNI and Lightning's chatter; it also
puts a vectorised ProxylessNAS architecture gradient in place of NNI's scalar loop (the same
gradient, :func:`_proxyless_backward`).

NNI 3.0 warns at import about torch classes it does not know (``Buffer``, ...), logs every cell's
sorted weights at export, and its Lightning evaluator warns that one-shot strategies have no
validation loader; Lightning logs the devices it found and a tip. None of it is actionable here.
NNI's own folders default to ``.cache/nni/`` in the repo, as for pruning.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterator

import torch

from ..paths import REPO_ROOT

# as greenlib.prune.backend: NNI's config and cache folders inside the repo, never under $HOME
NNI_DIR = REPO_ROOT / ".cache" / "nni"
os.environ.setdefault("NNI_CONFIG_DIR", str(NNI_DIR / "config"))
os.environ.setdefault("NNI_HOME", str(NNI_DIR / "home"))

# nni: only errors (its warnings here are about its own one-shot design); Lightning: warnings and up
QUIET_LOGGERS: dict[str, int] = {"nni": logging.ERROR, "pytorch_lightning": logging.WARNING,
                                 "lightning": logging.WARNING, "lightning_fabric": logging.WARNING,
                                 "lightning.pytorch": logging.WARNING}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """NNI's and Lightning's loggers raised to the levels above, and their known warnings hidden."""
    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*is found to be not a nn.Module.*")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


class _NoWebsockets(Exception):
    """Stands in for ``websockets.ConnectionClosed`` where websockets is not installed."""


def _websockets_stub() -> None:
    """Let ``nni.nas`` import where ``websockets`` is missing (a bare GPU image).

    NNI imports websockets at module level for the channel to its manager (the web UI's server),
    which an in-process search never opens. Where the package is missing, a stub module takes its
    place: what NNI reads at import (``ConnectionClosed``) exists, and ``connect`` raises ImportError.
    An installed websockets is always used as it is.
    """
    import importlib.util
    import sys
    import types

    if "websockets" in sys.modules and sys.modules["websockets"] is not None:
        return
    try:
        if importlib.util.find_spec("websockets") is not None:
            return
    except ValueError:  # a module object without a spec: leave it alone
        return

    async def connect(*args, **kwargs):
        raise ImportError("websockets is not installed: NNI's manager channel is unavailable "
                          "(greenlib.nas searches in-process and never opens it)")

    stub = types.ModuleType("websockets")
    stub.ConnectionClosed = _NoWebsockets
    stub.connect = connect
    stub.__greenlib_stub__ = True
    sys.modules["websockets"] = stub


def import_nni() -> None:
    """Import ``nni.nas`` (and Lightning) quietly; ImportError names what to install."""
    _websockets_stub()
    try:
        with quiet():
            import nni.nas.evaluator.pytorch  # noqa: F401
            import nni.nas.hub.pytorch  # noqa: F401
            import nni.nas.strategy  # noqa: F401
    except ImportError as e:
        raise ImportError(f"greenlib.nas needs nni 3.0 with pytorch-lightning, lightning-utilities and torchmetrics "
                          f"({type(e).__name__}: {e})") from e
    _vectorize_proxyless_arch_grad()


def _proxyless_backward(ctx, *grad_output):
    """NNI 3.0's ``_ProxylessFunction.backward`` with its architecture gradient in tensor form.

    ProxylessNAS's gradient of the path weights alpha through the binary gates g (Cai et al., eq. 4):
    dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) = p_i (dL/dg_i - sum_j dL/dg_j p_j), p = softmax(alpha),
    dL/dg_j = <dL/dout, out_j> (every candidate's output, the sampled one's kept from the forward).
    NNI computes the sum as a Python double loop of scalar tensor operations: about 250 tiny GPU
    launches per mixed layer in every backward pass (architecture and weight steps alike; 28 mixed
    layers on average in the paper's space), which leave the GPU idle most of a search. This is the
    same sum in four operations; everything else is NNI's, line for line.
    """
    from nni.nas.oneshot.pytorch.supermodule.proxyless import _pack_as_tuple, element_product_sum

    softmax, sample_index, forward_path_func, num_inputs = ctx.softmax, ctx.sample_index, ctx.forward_path_func, \
        ctx.num_inputs
    if ctx.needs_input_grad[0] or not ctx.needs_input_grad[4]:  # input 0: as NNI (never); 4: the path weights,
        grads = None  # which need none in a weight step (greenlib.nas.search): no candidate is run for them
    else:
        arch_alpha, *layer_input_output = ctx.saved_tensors
        layer_input = layer_input_output[:num_inputs]
        layer_output = layer_input_output[num_inputs:]
        with torch.no_grad():
            binary_grads = torch.stack([
                torch.as_tensor(element_product_sum(
                    _pack_as_tuple(layer_output if k == sample_index else forward_path_func(k, *layer_input)),
                    grad_output), dtype=arch_alpha.dtype, device=arch_alpha.device)
                for k in range(len(arch_alpha))])
            probs = softmax(arch_alpha)
            grads = probs * (binary_grads - (binary_grads * probs).sum())
    return (None, None, None, None, grads, *([None] * num_inputs), *grad_output)


def _vectorize_proxyless_arch_grad() -> None:
    """Put :func:`_proxyless_backward` in place of NNI's (once; the original stays as
    ``_ProxylessFunction.nni_backward`` for comparison)."""
    from nni.nas.oneshot.pytorch.supermodule import proxyless

    fn = proxyless._ProxylessFunction
    if "nni_backward" not in fn.__dict__:
        fn.nni_backward = fn.__dict__["backward"]
        fn.backward = staticmethod(_proxyless_backward)

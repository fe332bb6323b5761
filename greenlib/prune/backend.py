"""The one place NNI is set up: its folders, its logging and the torch compatibility fixes.

Imported first by :mod:`greenlib.prune`, before any other NNI import:

- NNI's config and cache folders (``NNI_CONFIG_DIR``, ``NNI_HOME``) default to ``.cache/nni/`` in
  the repo, so nothing is written under ``$HOME`` (pruning itself writes nothing there; the
  variables guard NNI code paths that would).
- NNI logs every traced node and replaced layer at INFO to stdout; its loggers are set to WARNING
  so notebooks stay readable (warnings and errors still show). :data:`SPEEDUP_LOGGER` is the
  quiet logger handed to ``ModelSpeedup``, which otherwise forces its own to INFO.
- :mod:`greenlib.prune.compat` fixes NNI 3.0's tracer for torch >= 2.3 (NNI issue #5768).
"""
from __future__ import annotations

import logging
import os
import warnings

from ..paths import REPO_ROOT

NNI_DIR = REPO_ROOT / ".cache" / "nni"
os.environ.setdefault("NNI_CONFIG_DIR", str(NNI_DIR / "config"))
os.environ.setdefault("NNI_HOME", str(NNI_DIR / "home"))

with warnings.catch_warnings():
    # NNI 3.0 registers pytree nodes through a torch API deprecated since 2.2 (FutureWarning) and
    # re-registers two torch.fx containers (UserWarning): harmless, printed once per import.
    warnings.filterwarnings("ignore", message=r".*_register_pytree_node.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*already registered as pytree node.*", category=UserWarning)
    import nni  # noqa: F401  (sets up NNI's logging)
    import nni.compression.pruning  # noqa: F401
    import nni.compression.speedup  # noqa: F401

from . import compat  # noqa: E402

NNI_LOG_LEVEL = logging.WARNING
logging.getLogger("nni").setLevel(NNI_LOG_LEVEL)

SPEEDUP_LOGGER = logging.getLogger("greenlib.prune.speedup")
SPEEDUP_LOGGER.setLevel(NNI_LOG_LEVEL)


class _KnownNoiseFilter(logging.Filter):
    """Drop two NNI warnings that carry no information here (both checked by tests/test_prune.py):

    - "Compatibility not tested with pruner type APoZPruner/ActivationMeanPruner": NNI's
      schedulers warn for any pruner outside their own list; ours are tested with them.
    - "both dim0 and dim1 masks found.": ModelSpeedup's mask-conflict check after propagation,
      where a pruned conv's input channels follow the previous conv's filters, as they must.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        untested = msg.startswith("Compatibility not tested with pruner type") and (
            "APoZPruner" in msg or "ActivationMeanPruner" in msg)
        return not (untested or msg == "both dim0 and dim1 masks found.")


for _name in ("nni.compression.pruning.scheduled_pruner", "nni.compression.speedup.mask_conflict"):
    logging.getLogger(_name).addFilter(_KnownNoiseFilter())

FIXES = compat.apply()
"""What :func:`greenlib.prune.compat.apply` changed in this process."""

"""Shared fixtures. Tests never write into the repo's data/ or figures/ (GREENLIB_DATA and
GREENLIB_FIGURES point into a temporary folder for the whole session), nor under $HOME. They do
not see a GREENLIB_DATASETS of the caller's either: the smoke profile runs on the stand-in, whatever
the machine holds (tests of real data pass their dataset location explicitly)."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Tool caches inside the repo, as `make` sets them, also when pytest runs outside make. Set at import,
# before any test module is collected: collecting a module that imports matplotlib writes its font
# cache, and a session fixture runs only after collection. Kernels the tests start keep their
# connection files (which hold the kernel's key) in JUPYTER_RUNTIME_DIR, not in /tmp.
TOOL_DIRS = {"MPLCONFIGDIR": "matplotlib", "IPYTHONDIR": "ipython", "JUPYTER_RUNTIME_DIR": "jupyter-runtime"}
# A checkpoint after every epoch (the default is one a minute, greenlib.train.CHECKPOINT_EVERY_S), so
# the tests that kill a run between two epochs, kernels they start included, find it to resume from.
os.environ["GREENLIB_CHECKPOINT_EVERY_S"] = "0"
for _var, _sub in TOOL_DIRS.items():
    os.environ.setdefault(_var, str(REPO / ".cache" / _sub))
    Path(os.environ[_var]).mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session", autouse=True)
def _isolated_outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("greenlib")
    old = {k: os.environ.get(k) for k in ("GREENLIB_DATA", "GREENLIB_FIGURES", "GREENLIB_DATASETS")}
    os.environ.pop("GREENLIB_DATASETS", None)
    os.environ["GREENLIB_DATA"] = str(root / "data")
    os.environ["GREENLIB_FIGURES"] = str(root / "figures")
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v

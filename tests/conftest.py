"""Shared fixtures. Tests never write into the repo's data/ or figures/ (GREENLIB_DATA and
GREENLIB_FIGURES point into a temporary folder for the whole session), nor under $HOME. They do
not see a GREENLIB_DATASETS of the caller's either: the smoke profile runs on the stand-in, whatever
the machine holds (tests of real data pass their dataset location explicitly)."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("greenlib")
    tools = {"MPLCONFIGDIR": "mpl", "IPYTHONDIR": "ipython", "JUPYTER_RUNTIME_DIR": "jupyter-runtime"}
    old = {k: os.environ.get(k) for k in ("GREENLIB_DATA", "GREENLIB_FIGURES", "GREENLIB_DATASETS", *tools)}
    os.environ.pop("GREENLIB_DATASETS", None)
    os.environ["GREENLIB_DATA"] = str(root / "data")
    os.environ["GREENLIB_FIGURES"] = str(root / "figures")
    for var, sub in tools.items():  # nothing under $HOME, also when pytest runs outside make
        os.environ.setdefault(var, str(root / sub))
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v

"""Shared fixtures. Tests never write into the repo's data/ or figures/: GREENLIB_DATA and
GREENLIB_FIGURES point into a temporary folder for the whole session."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("greenlib")
    old = {k: os.environ.get(k) for k in ("GREENLIB_DATA", "GREENLIB_FIGURES", "MPLCONFIGDIR")}
    os.environ["GREENLIB_DATA"] = str(root / "data")
    os.environ["GREENLIB_FIGURES"] = str(root / "figures")
    os.environ.setdefault("MPLCONFIGDIR", str(root / "mpl"))
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v

"""Where things live. Every path the package writes is derived here, inside the repo.

Override the roots with environment variables (useful on clusters with a scratch disk):
``GREENLIB_DATA`` (dataset caches and the results store) and ``GREENLIB_FIGURES``.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The repo's ``data/`` folder (published numbers, measured results, datasets)."""
    return Path(os.environ.get("GREENLIB_DATA", REPO_ROOT / "data"))


def results_dir(profile: str) -> Path:
    """Root of the results store for one profile: ``data/results/<profile>/``."""
    return data_dir() / "results" / profile


def cache_dir() -> Path:
    """Generated, re-creatable files (the offline dataset, tool caches). Ignored by git."""
    return data_dir() / "cache"


def figures_dir(profile: str) -> Path:
    """Tables and figures a notebook writes for one profile: ``figures/<profile>/``."""
    return Path(os.environ.get("GREENLIB_FIGURES", REPO_ROOT / "figures")) / profile


def rates_dir() -> Path:
    """Committed stores of training rates measured for pricing only (``data/measurements/rates/``):
    each a results store whose runs :func:`greenlib.cost.reference_rates` reads."""
    return REPO_ROOT / "data" / "measurements" / "rates"


def paper_dir() -> Path:
    """The paper's transcribed tables (``data/paper/``)."""
    return REPO_ROOT / "data" / "paper"

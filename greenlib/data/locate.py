"""Where the dataset archives are: one location, set once.

The location is, first found: the ``data_root`` a notebook or caller passes (non-empty), the
environment variable :data:`ENV_VAR` (``GREENLIB_DATASETS``), else ``data/datasets/`` (under
``GREENLIB_DATA`` when set). It is either

- a **folder holding archives under their known names** (:func:`known_names`: for ``cifar100``
  ``cifar100-png.tar.xz``, ``cifar100.tar``, ``cifar100.tar.xz``, ``cifar100.tar.gz``,
  ``cifar100.tgz``, ``cifar100.zip`` or a ``cifar100/`` folder holding ``train/`` and ``test/``), or
- **one archive, or one folder holding ``train/`` and ``test/``**: then it is the data of whatever
  dataset is loaded (the usual way to point ``imagefolder`` at your own data); the dataset's own
  checks still apply (``cifar100`` must reproduce the release's pixels).

Nothing here decodes; it only looks at names on disk.
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import paths
from .folder import ARCHIVE_SUFFIXES, is_source

ENV_VAR = "GREENLIB_DATASETS"
SHARED_NAMES: dict[str, tuple[str, ...]] = {  # the offline copies' file names (shared/datasets/README.md)
    "cifar100": ("cifar100-png.tar.xz",),
    "cifar10": ("cifar10-png.tar.xz",),
    "cifar10-jpeg": ("cifar10-jpeg.tar.xz",),
}


def data_root(value: str | Path | None = None) -> Path:
    """The dataset location: ``value`` when non-empty, else ``$GREENLIB_DATASETS``, else ``data/datasets/``."""
    if value is not None and str(value) != "":
        return Path(value).expanduser()
    env = os.environ.get(ENV_VAR, "")
    return Path(env).expanduser() if env else paths.data_dir() / "datasets"


def known_names(name: str) -> tuple[str, ...]:
    """File names ``name`` goes by inside a dataset folder, in the order they are looked for."""
    return (*SHARED_NAMES.get(name, ()), *(name + s for s in ARCHIVE_SUFFIXES), name)


def find(name: str, root: str | Path | None = None, named_only: bool = False) -> Path | None:
    """The archive or folder holding ``name`` at the location (see the module doc), or None.

    ``named_only``: ignore a location that is itself one archive (it may hold another dataset):
    used to ask whether a *counterpart* is there.
    """
    where = data_root(root)
    if is_source(where):
        return None if named_only else where
    if where.is_dir():
        for n in known_names(name):
            p = where / n
            if (p.is_file() and n.lower().endswith(ARCHIVE_SUFFIXES)) or (p.is_dir() and is_source(p)):
                return p
    return None


def describe(root: str | Path | None = None) -> str:
    """Where the datasets were looked for, and through which setting, for error messages."""
    if root is not None and str(root) != "":
        how = "data_root"
    elif os.environ.get(ENV_VAR):
        how = f"${ENV_VAR}"
    else:
        how = f"the default (${ENV_VAR} unset)"
    return f"{data_root(root)} ({how})"

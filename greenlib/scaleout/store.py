"""The locking results store, kept importable from here for callers written before it moved.

:class:`LockingStore` (one process computes a run, the others wait) is part of the results layer:
:mod:`greenlib.results`, where notebooks (``experiments.prepare``) and the grid both take it from.
"""
from ..results import LOCK_DIR, LockedRun, LockingStore, RunLock

__all__ = ["LockingStore", "LockedRun", "RunLock", "LOCK_DIR"]

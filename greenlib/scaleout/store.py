"""The results store for several processes at once: one process computes a run, the others wait.

:class:`greenlib.results.ResultsStore` has no shared index (one folder per run, every file written
atomically), so processes writing *different* runs never meet. Two processes may still want the
*same* run: two pruning cells of one model both need its base model, two distillation cells of
one student its shared IEC run. :class:`LockingStore` makes ``open`` take a per-run lock, held
until ``finish`` (or released at once when the run is already complete), so the second process
waits and then finds a cache hit instead of training the same run into the same folder.

Locks are POSIX record locks (``fcntl.lockf``) on ``<root>/.locks/<run_id>.lock``: the kernel drops
them when their process dies, so a killed job never leaves a run locked; they work across the
nodes of a cluster where the file system supports POSIX locks (NFSv4; Lustre mounted with
``flock``). Lock files are removed on release; the empty ``.locks`` folder is not a run.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..results import ResultsStore, Run, canonical_json, run_id

LOCK_DIR = ".locks"


class RunLock:
    """An exclusive lock on one file, across processes (and nodes, where the file system allows)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; False if ``blocking=False`` and another process holds it."""
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this handle")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                if blocking:
                    raise
                return False
            # The holder before us removes the file when it releases: if the name no longer leads to
            # the file we locked, a third process may lock a new file of that name. Start over.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file, then drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing the descriptor drops the POSIX lock


@dataclass
class LockedRun(Run):
    """A run this process computes: ``finish`` releases its lock after writing ``result.json``."""

    release: Callable[[], None] = field(default=lambda: None, repr=False)

    def finish(self, metrics: Mapping[str, Any], environment: Mapping[str, Any] | None = None) -> dict[str, Any]:
        try:
            return super().finish(metrics, environment)
        finally:
            self.release()


class LockingStore(ResultsStore):
    """A :class:`ResultsStore` whose runs are computed by one process at a time.

    ``open(config)`` waits for the run's lock (printing, once, that it waits), then behaves as
    ``ResultsStore.open``. A complete run (a cache hit) gives its lock back at once; an incomplete
    one is returned as a :class:`LockedRun` that keeps the lock until ``finish``. A process that
    opens a run it already holds does not wait for itself. :meth:`release_all` gives back every
    lock (a job that failed half-way); so does the process's exit.
    """

    def __init__(self, root: str | Path, log: Callable[[str], None] | None = None):
        super().__init__(root)
        self._held: dict[str, RunLock] = {}
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def lock_path(self, rid: str) -> Path:
        return self.root / LOCK_DIR / f"{rid}.lock"

    def open(self, config: Mapping[str, Any], environment: Mapping[str, Any] | None = None,
             force: bool = False) -> Run:
        rid = run_id(json.loads(canonical_json(config)))
        if rid not in self._held:
            lock = RunLock(self.lock_path(rid))
            if not lock.acquire(blocking=False):
                self._log(f"run {rid} is being computed by another process; waiting for it")
                t0 = time.monotonic()
                lock.acquire()
                self._log(f"run {rid}: lock obtained after {time.monotonic() - t0:.0f} s")
            self._held[rid] = lock
        try:
            run = super().open(config, environment, force)
        except BaseException:
            self._release(rid)
            raise
        if run.complete:
            self._release(rid)  # a cache hit: nothing will be written, let the others read it
            return run
        return LockedRun(run.folder, run.config, release=lambda: self._release(rid))

    def held(self) -> list[str]:
        """Ids of the runs whose locks this store holds."""
        return sorted(self._held)

    def _release(self, rid: str) -> None:
        lock = self._held.pop(rid, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for rid in list(self._held):
            self._release(rid)


__all__ = ["LockingStore", "LockedRun", "RunLock", "LOCK_DIR"]

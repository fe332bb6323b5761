"""The results store: one folder per run, keyed by a hash of the run's config.

Layout of ``<root>/<run_id>/`` (``root`` is usually ``paths.results_dir(profile)``)::

    config.json        the run's final parameters (what the id hashes)
    environment.json   GPU model, driver, torch, git commit and dirty flag, dataset, date; a run
                       resumed from its checkpoint keeps the environments it ran in before under
                       ``earlier_environments`` (oldest first)
    stages/<name>.json one traced stage's summary (greenlib.tracer.WindowSummary.to_dict())
    traces/<name>.csv.gz  that stage's sample series
    metrics.json       accuracy, IEC, params, FLOPs, ... (written by finish())
    result.json        written LAST, atomically: its presence marks the run complete
    *.pt               checkpoints and weights (git-ignored)

Every file is written atomically, so an interrupted run leaves either no ``result.json``
(the run resumes from its checkpoint) or a complete one. One definition of a complete run
(:func:`incomplete_reason`) serves the cache and the collector: a folder with a ``result.json``
that is not complete (``metrics.json`` missing, ``result.json`` holding ``{}``, a config that
does not hash to the folder's name) is skipped by the collector with a warning, never half-read,
and redone by the next ``open`` (:meth:`ResultsStore.incomplete` lists such folders).

Several processes may share a store: :class:`LockingStore` (what ``experiments.prepare`` and the
scale-out grid open) makes one process compute a run while the others wait for it.
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .io import atomic_write_bytes, atomic_write_json

SCHEMA_VERSION = 1
_REQUIRED = ("config.json", "environment.json", "metrics.json", "result.json")
REGENERATE_CHECKPOINT = "regenerate_checkpoint.pt"
"""In a complete run's folder, the checkpoint of the training that regenerates its lost weights
(:func:`greenlib.experiments.stored_model`), removed once ``model.pt`` is written."""


class CorruptRunWarning(UserWarning):
    """A run folder in the store could not be read: skipped when reading, redone when opened."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def run_id(config: Mapping[str, Any]) -> str:
    """``<kind>-<model>-<12 hex>``: readable prefix, then the SHA-256 of the canonical config."""
    digest = hashlib.sha256(canonical_json(dict(config, schema=SCHEMA_VERSION)).encode()).hexdigest()[:12]
    prefix = "-".join(str(config[k]) for k in ("kind", "model") if k in config)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in prefix)
    return f"{safe}-{digest}" if safe else digest


@dataclass
class Run:
    """A handle on one run folder."""

    folder: Path
    config: dict[str, Any]

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def complete(self) -> bool:
        """Whether the collector can read this run (the one definition: :func:`incomplete_reason`)."""
        return incomplete_reason(self.folder) is None

    @property
    def result(self) -> dict[str, Any]:
        """The complete run as one dict (config, environment, stages, metrics); raises if incomplete."""
        problem = incomplete_reason(self.folder)
        if problem:
            raise FileNotFoundError(f"run {self.id} is not complete ({problem}) in {self.folder}")
        return _read_json(self.folder / "result.json")

    def has_stage(self, name: str) -> bool:
        return (self.folder / "stages" / f"{_safe(name)}.json").exists()

    def stage(self, name: str) -> dict[str, Any]:
        data = _read_json(self.folder / "stages" / f"{_safe(name)}.json")
        if data is None:
            raise FileNotFoundError(f"run {self.id} has no stage {name!r}")
        return data

    def trace_path(self, name: str) -> Path:
        """Where stage ``name``'s sample series is stored (``traces/<name>.csv.gz``; it may not exist)."""
        return self.folder / "traces" / f"{_safe(name)}.csv.gz"

    def save_stage(self, name: str, summary: Mapping[str, Any], samples=None) -> None:
        """Store one traced stage: its summary dict and (optionally) its sample DataFrame."""
        if samples is not None and len(samples):
            buf = samples.to_csv(index=False)
            atomic_write_bytes(self.trace_path(name), gzip.compress(buf.encode(), mtime=0))
        atomic_write_json(self.folder / "stages" / f"{_safe(name)}.json", dict(summary))

    def stages(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p in sorted((self.folder / "stages").glob("*.json")):
            data = _read_json(p)
            if data is not None:
                out[data.get("name", p.stem)] = data
        return out

    def finish(self, metrics: Mapping[str, Any], environment: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write metrics, then result.json (last): the run is complete from here on.

        Metric names must differ from config keys (both become columns of ``load_results``).
        """
        clash = sorted(set(metrics) & set(self.config))
        if clash:
            raise ValueError(f"metrics {clash} share names with config keys; rename the metrics")
        env = dict(environment) if environment is not None else _read_json(self.folder / "environment.json")
        if environment is not None or env is None:  # a complete run has one, if only empty
            env = env or {}
            atomic_write_json(self.folder / "environment.json", env)
        atomic_write_json(self.folder / "metrics.json", dict(metrics))
        result = {"run_id": self.id, "schema": SCHEMA_VERSION, "config": self.config, "environment": env,
                  "stages": self.stages(), "metrics": dict(metrics)}
        atomic_write_json(self.folder / "result.json", result)
        return result


class ResultsStore:
    """Runs under one root folder. ``open(config)`` is the only way a run folder is made."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def open(self, config: Mapping[str, Any], environment: Mapping[str, Any] | None = None,
             force: bool = False) -> Run:
        """The run for ``config``: existing (a cache hit when complete) or new.

        ``force`` discards a complete result (``result.json`` and ``metrics.json``) so the run is
        recomputed; its stages are overwritten as they are redone. A folder holding a
        ``result.json`` that is not complete is discarded the same way, with a CorruptRunWarning.
        """
        config = json.loads(canonical_json(config))  # plain JSON types, as stored
        rid = run_id(config)
        folder = self.root / rid
        run = Run(folder, config)
        stored = _read_json(folder / "config.json")
        if stored is not None and stored != config:
            raise RuntimeError(f"run folder {folder} holds a different config than its id; remove it")
        if stored is None:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / "config.json", config)
        problem = incomplete_reason(folder)
        if problem and (folder / "result.json").exists():
            warnings.warn(f"run {rid} was stored incomplete ({problem}); recomputing it", CorruptRunWarning,
                          stacklevel=2)
            force = True
        if environment is not None and (force or problem):
            env = dict(environment)
            earlier = _read_json(folder / "environment.json")
            if not force and earlier:  # a resume, maybe on another machine: its earlier ones stay named
                env["earlier_environments"] = [*earlier.pop("earlier_environments", []), earlier]
            atomic_write_json(folder / "environment.json", env)
        if force:
            for name in ("result.json", "metrics.json"):  # result.json first: never metrics-less
                (folder / name).unlink(missing_ok=True)
        return run

    def get(self, run_id: str) -> Run:
        """The complete run ``run_id``; KeyError naming it when absent, incomplete or corrupt."""
        for run in self.runs():
            if run.id == run_id:
                return run
        raise KeyError(f"no complete run {run_id!r} in {self.root}")

    def runs(self) -> Iterator[Run]:
        """Complete, readable runs; corrupt folders are skipped with a CorruptRunWarning."""
        for folder, problem in self._finished_folders():
            if problem:
                warnings.warn(f"skipping corrupt run {folder}: {problem}", CorruptRunWarning, stacklevel=2)
                continue
            yield Run(folder, _read_json(folder / "config.json"))

    def incomplete(self) -> dict[str, str]:
        """Run id -> why, for folders holding a ``result.json`` that is not a complete run: the
        collector skips them and the next ``open`` of their config recomputes them."""
        return {folder.name: problem for folder, problem in self._finished_folders() if problem}

    def _finished_folders(self) -> Iterator[tuple[Path, str | None]]:
        # folders that hold a result.json (others are in progress or interrupted: not results yet)
        if not self.root.is_dir():
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if (folder / "result.json").exists():
                yield folder, incomplete_reason(folder)

    def load_results(self) -> "pandas.DataFrame":
        """One tidy row per complete run: config, environment, metrics, per-stage energy and time.

        Stage columns are ``<stage>.energy_j``, ``<stage>.energy_wh``, ``<stage>.elapsed_s``,
        ``<stage>.energy_source``, ``<stage>.mean_power_w``, ``<stage>.mean_gpu_util_pct``.
        """
        import pandas as pd

        rows = [flatten_result(run.result) for run in self.runs()]
        return pd.DataFrame(rows)

    def load_stages(self) -> "pandas.DataFrame":
        """One row per (run, stage) with the stage's whole summary: the long form of the above."""
        import pandas as pd

        rows = []
        for run in self.runs():
            res = run.result
            for name, summary in res["stages"].items():
                rows.append({"run_id": run.id, **_prefixed(res["config"], ""), "stage": name, **summary})
        return pd.DataFrame(rows)


_STAGE_FIELDS = ("energy_j", "energy_wh", "elapsed_s", "energy_source", "mean_power_w",
                 "mean_gpu_util_pct", "mean_mem_util_pct", "estimated",
                 "stack", "graph_captured")  # an IEC stage's inference stack; a training stage's step
_ENV_FIELDS = ("hardware", "gpu_model", "driver", "torch", "cpu", "git_commit", "git_dirty", "date_utc",
               "dataset_description")  # a run's metrics may name it too; theirs wins


def flatten_result(res: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": res["run_id"]}
    row.update(_prefixed(res["config"], ""))
    row.update({k: res["environment"].get(k) for k in _ENV_FIELDS})
    for name, s in res["stages"].items():
        row.update({f"{name}.{k}": s.get(k) for k in _STAGE_FIELDS})
    row.update(res["metrics"])
    return row


def _prefixed(d: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    # lists (e.g. seeds) become tuples so DataFrame columns stay hashable for groupby
    return {prefix + k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def incomplete_reason(folder: str | Path) -> str | None:
    """Why ``folder`` is not a complete run, or None when it is: what the cache (``Run.complete``)
    and the collector (``ResultsStore.runs``) both ask."""
    folder = Path(folder)
    for name in _REQUIRED:
        if _read_json(folder / name) is None:
            return f"{name} missing or unreadable"
    res = _read_json(folder / "result.json")
    cfg = _read_json(folder / "config.json")
    if not isinstance(res, dict) or not {"config", "metrics", "stages", "environment"} <= res.keys():
        return "result.json lacks config/metrics/stages/environment"
    if res["config"] != cfg:
        return "result.json and config.json disagree"
    if run_id(cfg) != folder.name:
        return f"config hashes to {run_id(cfg)}, not to the folder name"
    return None


def _read_json(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def same_value(stored: Any, want: Any) -> bool:
    """A stored config value equals the wanted one: None and NaN match each other, lists match
    tuples item by item (the store's tables turn lists into tuples)."""
    if want is None or (isinstance(want, float) and want != want):
        return stored is None or (isinstance(stored, float) and stored != stored)
    if isinstance(want, (list, tuple)):
        return isinstance(stored, (list, tuple)) and list(stored) == list(want)
    return bool(stored == want)


def config_mask(df: "pandas.DataFrame", want: Mapping[str, Any]) -> "pandas.Series":
    """Rows of a :meth:`ResultsStore.load_results` table whose config holds every ``want`` value
    (all False where the table lacks one of its keys)."""
    import pandas as pd

    if not set(want) <= set(df.columns):
        return pd.Series(False, index=df.index)
    mask = pd.Series(True, index=df.index)
    for key, value in want.items():
        mask &= df[key].map(lambda v, w=value: same_value(v, w))
    return mask


# -- several processes at once -------------------------------------------------------------------
# The store has no shared index (one folder per run, every file written atomically), so processes
# writing *different* runs never meet. Two processes may still want the *same* run: two notebooks
# started at once on one profile, two pruning cells of one model that both need its base model.
# LockingStore makes ``open`` take a per-run lock, held until ``finish`` (or released at once when
# the run is already complete), so the second process waits and then finds a cache hit instead of
# training the same run into the same folder.
#
# Locks are POSIX record locks (``fcntl.lockf``) on ``<root>/.locks/<run_id>.lock``: the kernel drops
# them when their process dies, so a killed job never leaves a run locked; they work across the
# nodes of a cluster where the file system supports POSIX locks (NFSv4; Lustre mounted with
# ``flock``). Lock files are removed on release; the ``.locks`` folder is not a run.

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


__all__ = ["ResultsStore", "Run", "run_id", "flatten_result", "CorruptRunWarning", "same_value", "config_mask",
           "incomplete_reason", "LockingStore", "LockedRun", "RunLock", "LOCK_DIR", "restate_utilisation"]


_NVIDIA_SOURCES = ("counter", "nvml", "smi")  # energy sources whose utilisation figures the NVIDIA driver averages


def restate_utilisation(root: str | Path) -> list[str]:
    """Re-derive the utilisation means of the stored runs under ``root`` from their traces, leaving
    out each window's first driver sample period (:data:`greenlib.tracer.base.NVIDIA_UTIL_PERIOD_S`;
    the reason is in :mod:`greenlib.tracer.summary`), as runs traced since then store them.

    Only stages measured on an NVIDIA source without ``util_lag_s`` change: every epoch window of a
    training stage (``epochs``, the stage mean time-weighted over them by
    :func:`greenlib.train.merge_windows`) or the stage's one window (``start_s``, ``end_s``).
    A stage without a trace of its own, copied from another run (``reused_from``), takes that run's
    restated figures. Energy, time and everything else stay as measured. ``stages/*.json`` and
    ``result.json`` are rewritten atomically. Returns ``"<run>/<stage>"`` for each stage changed;
    a second call changes nothing.
    """
    import pandas as pd

    from .tracer.base import NVIDIA_UTIL_PERIOD_S
    from .tracer.summary import utilisation_means

    lag = NVIDIA_UTIL_PERIOD_S
    root = Path(root)
    runs = {p: Run(p, _read_json(p / "config.json")) for p in sorted(root.iterdir()) if (p / "result.json").is_file()}
    changed: dict[Path, dict[str, dict[str, Any]]] = {}

    def restate(stage: dict[str, Any], trace) -> bool:
        if "util_lag_s" in stage or str(stage.get("energy_source")).split("+")[0] not in _NVIDIA_SOURCES:
            return False
        labels = sorted(set(int(g) for g in trace["gpu"]))
        if stage.get("epochs"):
            from .train import merge_windows
            for e in stage["epochs"]:
                gpu, mem = utilisation_means(trace, e["window.start_s"], e["window.end_s"], labels, lag)
                e["window.mean_gpu_util_pct"], e["window.mean_mem_util_pct"], e["window.util_lag_s"] = gpu, mem, lag
            merged = merge_windows(stage.get("name", "stage"), [
                {k[len("window."):]: v for k, v in e.items() if k.startswith("window.")} for e in stage["epochs"]])
            stage["mean_gpu_util_pct"], stage["mean_mem_util_pct"] = merged["mean_gpu_util_pct"], merged["mean_mem_util_pct"]
        elif "start_s" in stage and "end_s" in stage:
            stage["mean_gpu_util_pct"], stage["mean_mem_util_pct"] = utilisation_means(
                trace, stage["start_s"], stage["end_s"], labels, lag)
        else:
            return False
        stage["util_lag_s"] = lag
        return True

    reused: list[tuple[Path, Path, dict[str, Any]]] = []
    for folder, run in runs.items():
        for path in sorted((folder / "stages").glob("*.json")):
            stage = _read_json(path)
            if not isinstance(stage, dict):
                continue
            trace_path = run.trace_path(path.stem)
            if trace_path.is_file():
                if restate(stage, pd.read_csv(trace_path)):
                    changed.setdefault(folder, {})[path.stem] = stage
            elif stage.get("reused_from") and "util_lag_s" not in stage:
                reused.append((folder, path, stage))
    for folder, path, stage in reused:
        src = (changed.get(root / stage["reused_from"], {}).get(path.stem)
               or _read_json(root / stage["reused_from"] / "stages" / path.name))
        if isinstance(src, dict) and "util_lag_s" in src:
            for k in ("mean_gpu_util_pct", "mean_mem_util_pct", "util_lag_s"):
                stage[k] = src[k]
            if stage.get("epochs") and len(stage["epochs"]) == len(src.get("epochs", [])):
                for mine, theirs in zip(stage["epochs"], src["epochs"]):
                    mine.update({k: theirs[k] for k in theirs if "util" in k})
            changed.setdefault(folder, {})[path.stem] = stage
    out = []
    for folder, stages in changed.items():
        for name, stage in stages.items():
            atomic_write_json(folder / "stages" / f"{name}.json", stage)
            out.append(f"{folder.name}/{name}")
        result = _read_json(folder / "result.json")
        result["stages"] = runs[folder].stages()
        atomic_write_json(folder / "result.json", result)
    return sorted(out)

"""The results store: one folder per run, keyed by a hash of the run's config.

Layout of ``<root>/<run_id>/`` (``root`` is usually ``paths.results_dir(profile)``)::

    config.json        the run's final parameters (what the id hashes)
    environment.json   GPU model, driver, torch, git commit and dirty flag, dataset, date
    stages/<name>.json one traced stage's summary (greenlib.tracer.WindowSummary.to_dict())
    traces/<name>.csv.gz  that stage's sample series
    metrics.json       accuracy, IEC, params, FLOPs, ... (written by finish())
    result.json        written LAST, atomically: its presence marks the run complete
    *.pt               checkpoints and weights (git-ignored)

Every file is written atomically, so an interrupted run leaves either no ``result.json``
(the run resumes from its checkpoint) or a complete one. A folder whose ``result.json`` is
unreadable or whose config does not hash to its name is skipped with a warning, never half-read.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from .io import atomic_write_bytes, atomic_write_json

SCHEMA_VERSION = 1
_REQUIRED = ("config.json", "environment.json", "metrics.json", "result.json")


class CorruptRunWarning(UserWarning):
    """A run folder in the store could not be read and was skipped."""


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
        return _read_json(self.folder / "result.json") is not None

    @property
    def result(self) -> dict[str, Any]:
        """The complete run as one dict (config, environment, stages, metrics); raises if incomplete."""
        res = _read_json(self.folder / "result.json")
        if res is None:
            raise FileNotFoundError(f"run {self.id} is not complete (no readable result.json in {self.folder})")
        return res

    def has_stage(self, name: str) -> bool:
        return (self.folder / "stages" / f"{_safe(name)}.json").exists()

    def stage(self, name: str) -> dict[str, Any]:
        data = _read_json(self.folder / "stages" / f"{_safe(name)}.json")
        if data is None:
            raise FileNotFoundError(f"run {self.id} has no stage {name!r}")
        return data

    def save_stage(self, name: str, summary: Mapping[str, Any], samples=None) -> None:
        """Store one traced stage: its summary dict and (optionally) its sample DataFrame."""
        if samples is not None and len(samples):
            buf = samples.to_csv(index=False)
            atomic_write_bytes(self.folder / "traces" / f"{_safe(name)}.csv.gz", gzip.compress(buf.encode(), mtime=0))
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
        if environment is not None:
            atomic_write_json(self.folder / "environment.json", dict(environment))
        env = _read_json(self.folder / "environment.json") or {}
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
        recomputed; its stages are overwritten as they are redone.
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
        if environment is not None and (force or not run.complete):
            atomic_write_json(folder / "environment.json", dict(environment))
        if force:
            for name in ("result.json", "metrics.json"):
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
        if not self.root.is_dir():
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if not (folder / "result.json").exists():
                continue  # in progress or interrupted: not a result yet
            problem = _check_folder(folder)
            if problem:
                warnings.warn(f"skipping corrupt run {folder}: {problem}", CorruptRunWarning, stacklevel=2)
                continue
            yield Run(folder, _read_json(folder / "config.json"))

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
                 "mean_gpu_util_pct", "mean_mem_util_pct", "estimated")
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


def _check_folder(folder: Path) -> str | None:
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


__all__ = ["ResultsStore", "Run", "run_id", "flatten_result", "CorruptRunWarning", "same_value", "config_mask"]

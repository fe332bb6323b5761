"""The experiment grid over GPUs and Slurm nodes, through submitit: one run per GPU at a time.

    python -m greenlib.scaleout.grid --profile quick --section baselines \\
        -p "models=['resnet20','wrn-16-2']" -p "seeds=[0,1]" --executor local --gpus 2
    python -m greenlib.scaleout.grid --profile paper --grid grid.json --executor slurm --partition gpu
    python -m greenlib.scaleout.grid ... --dry-run [--estimate-from quick]   # the plan (and its cost)

A grid is a list of ``(section, params)`` entries (``--section``/``-p``, or ``--grid FILE.json``
holding ``[{"section": ..., "params": {...}}, ...]``). Every entry is validated by
:func:`greenlib.config.resolve` before anything is submitted, and expands into cells, one per run
its notebook would make (:mod:`.cells`). The plan has two waves: first the shared runs the cells
need (base models, teachers, shared IEC runs), then the cells, so two GPUs never train the same
base model; a run wanted by two jobs at once is computed by one while the other waits
(:class:`greenlib.results.LockingStore`). The local executor keeps one queue in that order and
starts a cell as soon as the shared runs it needs are done (a pruning run does not wait for a
teacher it does not use); Slurm gets one job array per wave.

Executors (submitit's; no scheduler of our own):

- ``local``: submitit's ``LocalExecutor`` on this host. Each GPU is a slot that runs one job at a
  time, the job seeing only its GPU (``CUDA_VISIBLE_DEVICES`` = its NVML index, with
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``), so measurements never share a card. Without a GPU, ``--workers``
  CPU slots.
- ``slurm``: submitit's ``SlurmExecutor``: each wave is one job array of one task with one GPU
  each (``--gres``-style ``gpus_per_node=1``); Slurm places them, ``--max-parallel`` caps how many
  run at once.

Results go to the results store only (one folder per run, written atomically). A cell whose run is
complete there is skipped; a killed grid, run again, skips what finished and resumes the runs it
interrupted from their checkpoints. Weights are not committed, so a shared run complete in the
store may have none on a new machine: where a cell to run starts from it, one job trains it again
for its weights (the stored measurement is kept) before those cells start, instead of each cell
training it. A failing cell is reported with its parameters and the others go on; cells that
needed a failed shared run are reported as blocked. Logs and a ``report.json``
go to ``--log-dir`` (default ``data/cache/grid/<UTC time>/``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .. import paths
from ..config import check_profile
from ..io import atomic_write_json
from ..results import REGENERATE_CHECKPOINT, ResultsStore, canonical_json
from .cells import KINDS, SECTIONS, Cell, expand, requires, runs_alone, selector

EXECUTORS: tuple[str, ...] = ("local", "slurm")
DEFAULT_TIMEOUT_MIN = 3 * 24 * 60  # a job's wall-time limit (submitit's local default is 2 min)
WEIGHTS_FILE = "model.pt"  # a run's weights in its folder (experiments.stored_model)


class GridError(ValueError):
    """Bad grid input (a one-line message naming the value and the accepted ones)."""


# -- the plan ----------------------------------------------------------------------------------

@dataclass
class Plan:
    """What a grid will run: ``waves[0]`` the shared runs the cells need, ``waves[1]`` the cells.

    ``done`` maps the cells already complete in the store to their run id (checked on
    ``hardware``; with no hardware known, nothing is checked here and each job is a cache hit).
    ``needs`` maps a cell to the shared cells it waits for. ``regenerate``: the shared runs complete
    in the store whose weights are gone (weights are not committed) while a cell to run starts from
    them; one job each trains them again for their weights (the measurement is kept) before those
    cells start, so that the cells do not each train them.
    """

    waves: list[list[Cell]]
    done: dict[Cell, str]
    needs: dict[Cell, list[Cell]]
    hardware: list[str] | None
    store_root: Path
    regenerate: list[Cell] = field(default_factory=list)

    @property
    def cells(self) -> list[Cell]:
        return [c for wave in self.waves for c in wave]

    def to_run(self) -> list[Cell]:
        return [c for c in self.cells if c not in self.done or c in self.regenerate]

    def describe(self) -> str:
        hw = ", ".join(self.hardware) if self.hardware else "unknown here (each job checks the store itself)"
        again = f", {len(self.regenerate)} of them for their weights" if self.regenerate else ""
        lines = [f"grid: {len(self.cells)} runs ({len(self.done)} complete in {self.store_root}, "
                 f"{len(self.to_run())} to run{again}); hardware checked: {hw}"]
        names = ("shared runs first", "cells")
        for i, wave in enumerate(self.waves):
            if not wave:
                continue
            lines.append(f"wave {i + 1} ({names[i]}): {len(wave)}")
            for c in wave:
                state = f"complete ({self.done[c]})" if c in self.done else "to run"
                if c in self.regenerate:
                    state += ", weights gone: trained again first"
                    if (self.store_root / self.done[c] / REGENERATE_CHECKPOINT).exists():
                        state += " (resumed from its checkpoint)"
                lines.append(f"  {c.label:<48} {state}")
        return "\n".join(lines)


def _key(cell: Cell) -> str:
    return cell.kind + canonical_json(selector(cell))


def make_plan(entries: Sequence[tuple[str, Mapping[str, Any]]], profile: str, store_root: str | Path,
              hardware: Sequence[str] | None = None) -> Plan:
    """Validate and expand ``entries`` (``(section, params)``) into waves. Raises ConfigError/GridError
    (one line) for a bad profile, section or parameter before anything runs."""
    check_profile(profile)
    if not entries:
        raise GridError("the grid is empty; give --section (with -p name=value) or --grid FILE.json")
    cells: dict[str, Cell] = {}
    for section, params in entries:
        if not isinstance(params, Mapping):
            raise GridError(f"grid entry {section!r}: params must be a mapping of name -> value, got {params!r}")
        for c in expand(section, profile, params):
            cells.setdefault(_key(c), c)
    shared: dict[str, Cell] = {}
    needs: dict[Cell, list[Cell]] = {}
    for c in cells.values():
        reqs = []
        for r in requires(c):
            k = _key(r)
            reqs.append(shared.setdefault(k, cells.get(k, r)))  # a cell others need moves to the shared wave
        needs[c] = reqs
    first = list(shared.values())
    second = [c for k, c in cells.items() if k not in shared]
    store_root = Path(store_root)
    hardware = sorted(set(hardware)) if hardware else None
    done = _complete_in_store(first + second, store_root, hardware) if hardware else {}
    regenerate = [c for c in first if c in done and KINDS[c.kind].weights
                  and not (store_root / done[c] / WEIGHTS_FILE).exists()
                  and any(c in needs[d] for d in second if d not in done)]
    return Plan([first, second], done, needs, hardware, store_root, regenerate)


def _complete_in_store(cells: Sequence[Cell], root: Path, hardware: Sequence[str]) -> dict[Cell, str]:
    """Cells whose run is complete in the store, measured on one of ``hardware`` (on ``cpu`` for a
    cell with ``device='cpu'``, which runs on the CPU whatever slot it is given)."""
    stored = [(run.id, run.config) for run in ResultsStore(root).runs()]
    out = {}
    for c in cells:
        want = selector(c)
        on = ("cpu",) if c.resolve().device == "cpu" else hardware
        for rid, cfg in stored:
            if cfg.get("hardware") in on and all(k in cfg and cfg[k] == v for k, v in want.items()):
                out[c] = rid
                break
    return out


# -- the job -----------------------------------------------------------------------------------

def run_cell(cell: Cell, store_root: str, progress: bool = True, weights_only: bool = False) -> dict[str, Any]:
    """Run one cell in this process (what a grid job does): prepare the notebook's context on the
    GPU this job sees, call the family function through a :class:`LockingStore`, return what the
    driver reports. ``weights_only``: the cell's run is complete and its weights are gone; its kind's
    ``weights`` function trains them again (status ``weights``). Raises what the function raises."""
    from .. import experiments
    from ..results import LockingStore

    t0 = time.time()
    cfg = cell.resolve()
    ctx = experiments.prepare(cfg)
    store = LockingStore(store_root)
    ctx.store = store
    ctx.environment = ctx.environment | {"launcher": launcher_info()}
    fn = KINDS[cell.kind].load_function(weights=weights_only)
    try:
        res = fn(ctx, *cell.args, progress=progress)
    finally:
        store.release_all()
    rid = res["run_id"]
    finished = (store.root / rid / "result.json").stat().st_mtime
    if weights_only and not (store.root / rid / WEIGHTS_FILE).exists():
        raise GridError(f"{cell.label}: no {WEIGHTS_FILE} in {store.root / rid} after regenerating its weights")
    status = "weights" if weights_only else "cached" if finished < t0 else "done"
    return {"run_id": rid, "status": status, "hardware": res["config"].get("hardware"),
            "host": socket.gethostname(), "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "started_at": t0, "ended_at": time.time()}


def launcher_info() -> dict[str, Any]:
    """How this process was started (stored in the run's environment.json)."""
    env = os.environ
    keys = ("SUBMITIT_EXECUTOR", "SUBMITIT_LOCAL_JOB_ID", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID",
            "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
    return {k.lower(): env[k] for k in keys if k in env} | {"host": socket.gethostname()}


# -- outcomes ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What became of one cell: ``skipped`` (complete before), ``done``, ``cached`` (the job found
    it complete), ``weights`` (complete before, its gone weights trained again), ``failed``
    (``error``: the exception's last line; ``log``: the job's stderr) or ``blocked`` (a shared run
    it needs failed)."""

    cell: Cell
    status: str
    run_id: str | None = None
    slot: str | None = None
    error: str | None = None
    log: str | None = None
    elapsed_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cell"] = {"kind": self.cell.kind, "label": self.cell.label, "section": self.cell.section,
                     "profile": self.cell.profile, "params": self.cell.params, "args": list(self.cell.args)}
        return d


@dataclass
class Report:
    outcomes: list[Outcome]
    wall_s: float
    plan: Plan

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in ("failed", "blocked")]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out

    def table(self) -> str:
        rows = [f"{'run':<48} {'status':<8} {'slot':<6} {'time_s':>7}  run_id / error"]
        for o in self.outcomes:
            t = f"{o.elapsed_s:7.0f}" if o.elapsed_s is not None else " " * 7
            rows.append(f"{o.cell.label:<48} {o.status:<8} {o.slot or '':<6} {t}  {o.error or o.run_id or ''}")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts().items()))
        rows.append(f"{len(self.outcomes)} runs in {self.wall_s:.0f} s: {counts}")
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {"wall_s": self.wall_s, "counts": self.counts(), "store": str(self.plan.store_root),
                "hardware_checked": self.plan.hardware, "outcomes": [o.to_dict() for o in self.outcomes]}


def _error_line(exc: BaseException) -> tuple[str, str | None]:
    """The exception's last line (``ValueError: ...``) from a submitit error, and the log path."""
    text = str(exc)
    parts = text.split("----------------------")
    body = parts[1] if len(parts) >= 3 else text
    lines = [ln.strip() for ln in body.strip().splitlines() if ln.strip()]
    log = next((ln.split("- ", 1)[1] for ln in text.splitlines() if ln.strip().startswith("- ") and
                ln.strip().endswith(".err")), None)
    line = lines[-1] if lines else type(exc).__name__
    if len(parts) < 3:  # not a traceback: e.g. a job killed before it wrote its result
        line = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return line, log


def _collect(cell: Cell, job, slot: str | None, t0: float) -> Outcome:
    elapsed = time.time() - t0
    exc = job.exception()
    if exc is not None:
        line, log = _error_line(exc)
        return Outcome(cell, "failed", slot=slot, error=line, log=log, elapsed_s=elapsed)
    res = job.result()
    return Outcome(cell, res["status"], run_id=res["run_id"], slot=slot, elapsed_s=elapsed, info=res)


# -- executors ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Slot:
    """Where one local job runs: ``gpu`` (the NVML index it sees alone) or None for a CPU job."""

    name: str
    gpu: int | None
    hardware: str | None = None
    threads: int | None = None  # OMP_NUM_THREADS of a CPU job


def local_slots(gpus: str | int | Sequence[int] | None = None, workers: int = 1,
                nvml=None, env: Mapping[str, str] | None = None) -> list[Slot]:
    """The slots of this host: one per GPU asked for (``gpus``: a count, CUDA ordinals, ``"all"``;
    None: every visible GPU, or ``workers`` CPU slots where none is visible; 0: CPU slots).
    Raises GridError naming the GPUs visible for an ordinal or count beyond them."""
    from ..tracer import visible_gpus

    env = dict(os.environ) if env is None else dict(env)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise GridError(f"workers={workers!r} is not accepted; accepted: an int >= 1")
    visible = visible_gpus(nvml=nvml, env=env)
    if isinstance(gpus, str):
        gpus = _parse_gpus(gpus)
    if gpus is None:
        gpus = "all" if visible else 0
    if gpus == 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return [Slot(f"cpu{i}", None, "cpu", max(1, cores // workers)) for i in range(workers)]
    names = ", ".join(f"{g['ordinal']} ({g['name']})" for g in visible) or "none"
    if gpus == "all":
        ordinals = [g["ordinal"] for g in visible]
    elif isinstance(gpus, int):
        if gpus > len(visible):
            raise GridError(f"gpus={gpus}: this host shows {len(visible)} GPU(s) through NVML "
                            f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r}); visible: {names}")
        ordinals = list(range(gpus))
    else:
        ordinals = list(gpus)
        bad = [o for o in ordinals if not 0 <= o < len(visible)]
        if bad or len(set(ordinals)) != len(ordinals):
            raise GridError(f"gpus={ordinals}: {bad[0] if bad else 'a repeated ordinal'} is not accepted; "
                            f"visible CUDA ordinals: {names}")
    if not ordinals:
        raise GridError("no GPU visible through NVML; use --gpus 0 (CPU slots) or check the driver")
    return [Slot(f"gpu{o}", visible[o]["physical"], visible[o]["name"]) for o in ordinals]


def _parse_gpus(text: str) -> str | int | list[int]:
    t = text.strip().lower()
    if t == "all":
        return "all"
    try:
        if "," in t:
            return [int(x) for x in t.split(",") if x.strip()]
        return int(t)
    except ValueError:
        raise GridError(f"--gpus {text!r} is not accepted; accepted: a count (2), CUDA ordinals (0,2) or all") from None


@contextlib.contextmanager
def _job_env(**values: str | None) -> Iterator[None]:
    """Environment a submitted job inherits (submitit copies ``os.environ`` at submission)."""
    old = {k: os.environ.get(k) for k in values}
    try:
        _set_env(values)
        yield
    finally:
        _set_env(old)


def _set_env(values: Mapping[str, str | None]) -> None:
    """Set each variable, or unset it where the value is None."""
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _pythonpath() -> str:
    """The checkout first on the jobs' path, so they import this greenlib even where it is not installed."""
    rest = os.environ.get("PYTHONPATH")
    return str(paths.REPO_ROOT) + (os.pathsep + rest if rest else "")


def _local_executor(folder: Path):
    import submitit

    return submitit.LocalExecutor(folder=str(folder / "%j"))


def _submit_local(executor, slot: Slot, cell: Cell, store_root: Path, timeout_min: float, weights_only: bool = False):
    if slot.gpu is None:
        executor.update_parameters(timeout_min=timeout_min, gpus_per_node=0, visible_gpus=())
        env = {"OMP_NUM_THREADS": str(slot.threads)}
    else:
        executor.update_parameters(timeout_min=timeout_min, gpus_per_node=1, visible_gpus=(slot.gpu,))
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # the job's CUDA index is then NVML's (the tracer's)
    with _job_env(PYTHONPATH=_pythonpath(), **env):
        return executor.submit(run_cell, cell, str(store_root), True, weights_only)  # (progress, weights_only)


def _dispatch_local(cells: Sequence[Cell], slots: Sequence[Slot], executor, store_root: Path, timeout_min: float,
                    log: Callable[[str], None], poll_s: float, on_outcome: Callable[[Outcome], None],
                    needs: Mapping[Cell, Sequence[Cell]] | None = None,
                    outcomes: Mapping[Cell, Outcome] | None = None, weights_only: Sequence[Cell] = ()) -> None:
    """One job per free slot until every cell has run; a slot never runs two jobs at once.

    A free slot takes the first cell in ``cells`` order whose ``needs`` (the shared runs it waits
    for) have all finished well in ``outcomes`` (the driver's record, which ``on_outcome`` fills), so
    a cell starts as soon as its own base model or teacher is done, not when the whole first wave
    is; a cell whose need failed is reported ``blocked`` and never submitted. A need that is neither
    among ``cells`` nor in ``outcomes`` does not hold a cell back. The cells in ``weights_only`` run
    as weights jobs (:func:`run_cell`).

    A cell whose energy is the host's CPU time (:func:`.cells.runs_alone`: PyTorch int8) starts only
    on an idle host and holds every other slot while it runs: a training job beside it (its
    DataLoader workers, its CPU threads) made one CPU int8 measurement 8x slower and 14x costlier
    (docs/quantization.md). It waits, without holding the queue, for a moment when no job runs: behind
    a long queue of ready cells, that is the queue's end."""
    needs = needs or {}
    outcomes = outcomes if outcomes is not None else {}
    pending = list(cells)
    running: dict[str, tuple[Cell, Any, float, Slot]] = {}

    def ready(cell: Cell) -> bool:  # every need has an outcome, or is not among these cells at all
        busy = [c for c, *_ in running.values()]
        return all(r in outcomes or (r not in pending and r not in busy) for r in needs.get(cell, ()))

    try:
        while pending or running:
            for cell in list(pending):
                if (need := _failed_need(cell, needs, outcomes)) is not None:
                    pending.remove(cell)
                    on_outcome(_blocked(cell, need))
            for slot in slots:
                if slot.name in running:
                    continue
                if any(runs_alone(c) for c, *_ in running.values()):
                    break
                cell = next((c for c in pending if ready(c) and not (running and runs_alone(c))), None)
                if cell is None:
                    break
                pending.remove(cell)
                weights = cell in weights_only
                job = _submit_local(executor, slot, cell, store_root, timeout_min, weights_only=weights)
                running[slot.name] = (cell, job, time.time(), slot)
                log(f"start   {cell.label}{' (its weights)' if weights else ''} on {slot.name} (job {job.job_id})")
            for name, (cell, job, t0, slot) in list(running.items()):
                if job.done():
                    del running[name]
                    on_outcome(_collect(cell, job, name, t0))
            if running:
                time.sleep(poll_s)
            elif pending and not any(ready(c) for c in pending):  # cannot happen: a need is always pending or run
                raise GridError(f"{pending[0].label} waits for a run that is neither pending nor running")
    except KeyboardInterrupt:
        for cell, job, _, _ in running.values():
            _kill_local_job(job)
        log(f"interrupted: {len(running)} running job(s) stopped; run the grid again to resume")
        raise


def _failed_need(cell: Cell, needs: Mapping[Cell, Sequence[Cell]], outcomes: Mapping[Cell, Outcome]) -> Cell | None:
    """The first shared run ``cell`` needs that failed (or was itself blocked), else None."""
    return next((r for r in needs.get(cell, ()) if r in outcomes and outcomes[r].status in ("failed", "blocked")),
                None)


def _blocked(cell: Cell, need: Cell) -> Outcome:
    return Outcome(cell, "blocked", error=f"needs {need.label}, which failed")


def _process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux ``/proc``), parents first."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    tree, i = [pid], 0
    while i < len(tree):
        tree += [c for c, pp in parent.items() if pp == tree[i]]
        i += 1
    return tree


def _kill_local_job(job) -> None:
    """Stop a local job at once: its controller and the task under it (SIGKILL; the run resumes from its
    last checkpoint). submitit's own cancel sends SIGINT, which a grid started in the background
    ignores, and its tasks ignore SIGTERM by design."""
    import signal

    for pid in _process_tree(int(job.job_id)):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc = getattr(job, "_process", None)
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)


def _slurm_executor(folder: Path, timeout_min: float, partition: str | None, max_parallel: int | None,
                    cpus_per_task: int | None, mem_gb: float | None, extra: Mapping[str, str]):
    import submitit

    try:
        ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster="slurm")
    except RuntimeError as e:  # submitit looks for srun
        raise GridError(f"executor 'slurm' cannot start here ({e}); run the grid on a Slurm login node, or use "
                        "--executor local") from None
    params: dict[str, Any] = {"timeout_min": int(timeout_min), "nodes": 1, "tasks_per_node": 1,
                              "gpus_per_node": 1, "name": "greeness-grid"}
    if partition:
        params["slurm_partition"] = partition
    if max_parallel:
        params["slurm_array_parallelism"] = max_parallel
    if cpus_per_task:
        params["cpus_per_task"] = cpus_per_task
    if mem_gb:
        params["mem_gb"] = mem_gb
    if extra:
        params["slurm_additional_parameters"] = dict(extra)
    ex.update_parameters(**params)
    return ex


def _dispatch_array(cells: Sequence[Cell], executor, store_root: Path, log: Callable[[str], None], poll_s: float,
                    on_outcome: Callable[[Outcome], None], weights_only: Sequence[Cell] = ()) -> None:
    """The wave as one job array (Slurm places each task on a GPU); wait for all of it."""
    n = len(cells)
    with _job_env(PYTHONPATH=_pythonpath()):
        jobs = executor.map_array(run_cell, list(cells), [str(store_root)] * n, [True] * n,
                                  [c in weights_only for c in cells])
    log(f"submitted {len(jobs)} job(s): array {jobs[0].job_id.split('_')[0] if jobs else '-'}")
    t0 = time.time()
    waiting = dict(zip(range(len(jobs)), zip(cells, jobs)))
    try:
        while waiting:
            for i, (cell, job) in list(waiting.items()):
                if job.done():
                    del waiting[i]
                    on_outcome(_collect(cell, job, f"job {job.job_id}", t0))
            if waiting:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        log("interrupted: the submitted jobs keep running in Slurm; run the grid again to collect them")
        raise


# -- the driver --------------------------------------------------------------------------------

def run_grid(entries: Sequence[tuple[str, Mapping[str, Any]]], profile: str, *, executor: str = "local",
             gpus: str | int | Sequence[int] | None = None, workers: int = 1, store_root: str | Path | None = None,
             log_dir: str | Path | None = None, timeout_min: float = DEFAULT_TIMEOUT_MIN,
             hardware: Sequence[str] | None = None, partition: str | None = None, max_parallel: int | None = None,
             cpus_per_task: int | None = None, mem_gb: float | None = None, slurm_args: Mapping[str, str] = (),
             poll_s: float = 1.0, log: Callable[[str], None] = print) -> Report:
    """Run the grid ``entries`` of ``profile`` through ``executor``; returns the :class:`Report`
    (also written to ``<log_dir>/report.json``). Bad input raises GridError/ConfigError before
    any job starts; a failing cell is an outcome, not an exception."""
    if executor not in EXECUTORS:
        raise GridError(f"executor {executor!r} is not accepted; accepted: {', '.join(EXECUTORS)}")
    t_start = time.time()
    store_root = Path(store_root) if store_root is not None else paths.results_dir(profile)
    log_dir = Path(log_dir) if log_dir is not None else default_log_dir()
    slots = local_slots(gpus, workers) if executor == "local" else None
    if hardware is None and slots is not None:
        hardware = sorted({s.hardware for s in slots if s.hardware})
    plan = make_plan(entries, profile, store_root, hardware)
    log(plan.describe())
    if executor == "local":
        log(f"executor: submitit local, {len(slots)} slot(s): "
            + ", ".join(f"{s.name}" + (f" (NVML {s.gpu}, {s.hardware})" if s.gpu is not None else "") for s in slots))
        ex = _local_executor(log_dir)
    else:
        ex = _slurm_executor(log_dir, timeout_min, partition, max_parallel, cpus_per_task, mem_gb, dict(slurm_args))
        log(f"executor: submitit slurm (partition {partition or 'default'}, one GPU per job)")
    log(f"logs: {log_dir}")

    outcomes: dict[Cell, Outcome] = {}
    n_total = len(plan.cells)

    def record(o: Outcome) -> None:
        outcomes[o.cell] = o
        what = o.error if o.status in ("failed", "blocked") else o.run_id
        log(f"[{len(outcomes)}/{n_total}] {o.status:<7} {o.cell.label} ({what})"
            + (f"\n          parameters: {o.cell.describe()}" + (f"\n          log: {o.log}" if o.log else "")
               if o.status == "failed" else ""))

    for c, rid in plan.done.items():
        if c not in plan.regenerate:
            record(Outcome(c, "skipped", run_id=rid))
    if executor == "local":  # one queue, shared runs first; each cell starts once its own needs are done
        todo = [c for c in plan.cells if c not in outcomes]
        if todo:
            _dispatch_local(todo, slots, ex, store_root, timeout_min, log, poll_s, record, plan.needs, outcomes,
                            plan.regenerate)
    else:  # Slurm: one job array per wave
        for wave in plan.waves:
            todo = []
            for c in wave:
                if c in outcomes:
                    continue
                if (need := _failed_need(c, plan.needs, outcomes)) is not None:
                    record(_blocked(c, need))
                else:
                    todo.append(c)
            if todo:
                _dispatch_array(todo, ex, store_root, log, poll_s, record, plan.regenerate)
    report = Report([outcomes[c] for c in plan.cells], time.time() - t_start, plan)
    atomic_write_json(log_dir / "report.json", report.to_dict())
    return report


def estimate(cells: Sequence[Cell], sources: Sequence[str | Path], hardware: str | None = None) -> "pandas.DataFrame":
    """Energy (kWh) and GPU-hours of each training stage ``cells`` would train, priced by
    :func:`greenlib.cost.predict` from the rates measured in ``sources`` (profiles or store folders).
    Raises ValueError for a source that is neither, or when nothing was measured there."""
    import pandas as pd

    from .. import cost
    from ..config import PROFILES
    from .cells import stages

    rates = []
    for src in sources:
        root = paths.results_dir(str(src)) if str(src) in PROFILES else Path(src)
        if not root.is_dir():
            raise GridError(f"--estimate-from {str(src)!r} is neither a profile ({', '.join(PROFILES)}) with a "
                            "results store nor a folder")
        rates.append(cost.measured_rates(ResultsStore(root)))
    rows = [row for c in cells for row in stages(c)]
    if not rows:
        return pd.DataFrame(columns=["notebook", "kind", "key", "energy_kwh", "gpu_hours", "basis"])
    return cost.predict(pd.DataFrame(rows), pd.concat(rates, ignore_index=True), hardware=hardware)


def format_estimate(est: "pandas.DataFrame", n_runs: int, gpus: Sequence[int] = (1, 2, 8)) -> str:
    """One line per priced stage, then the totals and the wall time they take on ``gpus`` GPUs."""
    if est.empty:
        return f"estimate: the {n_runs} runs to start train nothing (quantization, shared IEC runs)"
    lines = [f"estimate (rates measured on {est['rates_from'].iloc[0]}; training stages only):",
             f"{'run':<48} {'stage':<9} {'kWh':>8} {'GPU-h':>7}  basis"]
    for r in est.itertuples(index=False):
        lines.append(f"{r.notebook:<48} {r.kind:<9} {r.energy_kwh:8.3f} {r.gpu_hours:7.2f}  {r.basis}")
    hours = est["gpu_hours"].sum()
    missing = est[est["basis"] == "no measurement"]
    walls = ", ".join(f"{n} GPU(s) >= {hours / n:.1f} h" for n in gpus)
    lines.append(f"total over {n_runs} runs: {est['energy_kwh'].sum():.2f} kWh, {hours:.1f} GPU-hours ({walls})")
    if len(missing):
        lines.append(f"not priced ({len(missing)} stages, left out of the total): "
                     + ", ".join(sorted(set(f"{k} {v}" for k, v in zip(missing["kind"], missing["key"])))))
    return "\n".join(lines)


def default_log_dir() -> Path:
    return paths.cache_dir() / "grid" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def read_grid_file(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``[{"section": ..., "params": {...}}, ...]`` from a JSON file; GridError names a bad entry."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise GridError(f"--grid {str(path)!r}: cannot read it as JSON ({e})") from None
    if not isinstance(data, list):
        raise GridError(f"--grid {str(path)!r}: expected a list of {{'section': ..., 'params': {{...}}}}")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "section" not in item or set(item) - {"section", "params"}:
            raise GridError(f"--grid {str(path)!r}: entry {i} {item!r} is not {{'section': ..., 'params': {{...}}}}")
        out.append((item["section"], item.get("params") or {}))
    return out


# -- command line ------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m greenlib.scaleout.grid",
                                description="Run an experiment grid over GPUs or Slurm nodes through submitit.")
    p.add_argument("--profile", default="quick", help="smoke, quick or paper (default quick)")
    p.add_argument("--section", help=f"one notebook section: {', '.join(SECTIONS)}")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter of the section (a Python literal), repeatable")
    p.add_argument("--grid", help="a JSON file: [{\"section\": ..., \"params\": {...}}, ...]")
    p.add_argument("--executor", default="local", help="local (this host) or slurm")
    p.add_argument("--gpus", default=None, help="local: a count, CUDA ordinals (0,2) or all (default: every visible "
                   "GPU; 0: CPU)")
    p.add_argument("--workers", type=int, default=1, help="local without GPU: CPU slots (default 1)")
    p.add_argument("--store", default=None, help="results store root (default data/results/<profile>)")
    p.add_argument("--log-dir", default=None, help="submitit logs and report.json (default data/cache/grid/<time>)")
    p.add_argument("--timeout-min", type=float, default=DEFAULT_TIMEOUT_MIN, help="wall-time limit of one job")
    p.add_argument("--hardware", action="append", default=None,
                   help="slurm: GPU name runs are checked against (as torch names it), repeatable")
    p.add_argument("--partition", default=None, help="slurm partition")
    p.add_argument("--max-parallel", type=int, default=None, help="slurm: jobs of one array running at once")
    p.add_argument("--cpus-per-task", type=int, default=None, help="slurm: CPUs per job")
    p.add_argument("--mem-gb", type=float, default=None, help="slurm: memory per job")
    p.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sbatch option (e.g. account=abc, constraint=h100), repeatable")
    p.add_argument("--dry-run", action="store_true", help="print the plan; submit nothing")
    p.add_argument("--estimate-from", action="append", default=None, metavar="PROFILE_OR_DIR",
                   help="with --dry-run: price the runs to start (greenlib.cost) from the per-epoch rates measured "
                        "in this profile's store (or folder), repeatable; --hardware picks the GPU rates")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    def _interrupt(signum, frame):  # SIGTERM (kill, a batch system) stops the grid as Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)  # restored on return: main() may run inside another program
    try:
        return _main(_parser().parse_args(argv))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    from ..pipeline import PipelineError, parse_overrides

    try:
        if bool(args.section) == bool(args.grid):
            raise GridError("give either --section (with -p name=value) or --grid FILE.json")
        if args.grid:
            if args.param:
                raise GridError("-p applies to --section; put the parameters in the --grid file")
            entries = read_grid_file(args.grid)
        else:
            entries = [(args.section, parse_overrides(args.param))]
        slurm_args = {}
        for item in args.slurm_arg:
            if "=" not in item:
                raise GridError(f"--slurm-arg {item!r} is not KEY=VALUE")
            k, v = item.split("=", 1)
            slurm_args[k.strip()] = v
        store = Path(args.store) if args.store else paths.results_dir(check_profile(args.profile))
        if args.dry_run:
            hardware = args.hardware
            if hardware is None and args.executor == "local":
                hardware = sorted({s.hardware for s in local_slots(args.gpus, args.workers) if s.hardware})
            plan = make_plan(entries, args.profile, store, hardware)
            print(plan.describe())
            if args.estimate_from:
                to_run = plan.to_run()
                rated_on = args.hardware[0] if args.hardware else None
                print(format_estimate(estimate(to_run, args.estimate_from, hardware=rated_on), len(to_run)))
            return 0
        report = run_grid(entries, args.profile, executor=args.executor, gpus=args.gpus, workers=args.workers,
                          store_root=store, log_dir=args.log_dir, timeout_min=args.timeout_min,
                          hardware=args.hardware, partition=args.partition, max_parallel=args.max_parallel,
                          cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, slurm_args=slurm_args)
    except (ValueError, PipelineError) as e:  # GridError and ConfigError are ValueErrors: bad input
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(report.table())
    for o in report.failed:
        print(f"{o.status.upper()}: {o.cell.describe()}: {o.error}" + (f" (log: {o.log})" if o.log else ""),
              file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Sensitivity studies (the paper's Section 4.3): what moves the numbers besides the method.

:func:`run_sampling_study` is notebook 11's run: train a model for a few epochs while a fast NVML
tracer (both power fields, energy counter at the window edges) and one ``nvidia-smi -q -x`` tracer
per interval (the paper's method) record the same window; store every series and each one's
error against the counter. :func:`window_means` gives Figure 5's lines: each series' mean over
that same window, time-weighted, as the error table computes it.

:func:`run_batch_size_study` (notebook 10, the paper's Figure 4) and :func:`run_gpu_type_job`
(notebook 12, its Table 4) are ordinary distillation runs (``greenlib.distill``) of one KD job,
at several batch sizes or on whatever GPU runs the notebook; :func:`epoch_table` and
:func:`per_epoch_summary` read their per-epoch tracer windows back from the results store.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from . import config as _config
from .config import ConfigError, Resolved
from .experiments import Context, hardware_name, shared_config
from .io import atomic_write_text
from .models import build_model
from .results import Run
from .tracer import available_sources, read_trace
from .tracer.accuracy import compare_to_counter, trace_all_sources
from .train import Trainer, TrainConfig, seed_everything

STUDY_WINDOW = "training"


def sampling_config(cfg: Resolved) -> dict[str, Any]:
    """The sampling study's config without seed and hardware (what selects stored runs)."""
    return {"kind": "sampling_rate", "model": cfg.model, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "base_interval_s": cfg.base_interval_s, "smi_intervals_s": list(cfg.smi_intervals_s),
            **shared_config(cfg)}


def _sources(ctx: Context) -> tuple[str, list[float], Any]:
    """(fast source, smi intervals that can run, gpus) on this machine."""
    if ctx.device.type != "cuda":
        return "cpu", [], None
    avail = available_sources()
    fast = "counter" if avail.get("counter") == "ok" else "nvml"
    smi = [float(x) for x in ctx.cfg.smi_intervals_s] if avail.get("smi") == "ok" else []
    return fast, smi, (ctx.device.index or 0,)


def run_sampling_study(ctx: Context, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` for ``cfg.epochs`` epochs under every tracer; cached in the store.

    On a machine without a GPU the only series is the ``cpu`` source's, which then plays the
    reference (its energy is estimated unless RAPL is readable): the notebook says so.
    """
    cfg = ctx.cfg
    bad = [x for x in cfg.smi_intervals_s if not isinstance(x, (int, float)) or isinstance(x, bool) or x <= 0]
    if bad:
        raise ValueError(f"smi_intervals_s has {bad[0]!r}; every interval must be a number of seconds > 0")
    config = sampling_config(cfg) | {"seed": seed, "hardware": hardware_name(ctx.device)}
    run = ctx.store.open(config, environment=ctx.environment, force=cfg.force)
    if run.complete:
        return run.result
    fast_source, smi_intervals, gpus = _sources(ctx)
    seed_everything(seed)
    model = build_model(cfg.model, num_classes=ctx.dataset.num_classes).to(ctx.device)
    train_loader, _ = ctx.loaders(seed)
    # every window waits for its closing sample: the study compares the sampled figures with the counter
    trainer = Trainer(model, train_loader, TrainConfig(epochs=cfg.epochs), ctx.device, wait_for_samples=True)
    cpu = ctx.device.type == "cpu"
    fast, smi, summary = trace_all_sources(
        lambda tracer: trainer.fit(tracer, STUDY_WINDOW, progress=progress), gpus=gpus, fast_source=fast_source,
        base_interval_s=cfg.base_interval_s, smi_intervals_s=smi_intervals, lead_s=0.3 if cpu else 3.0,
        tail_s=0.5 if cpu else 2.0, sync=(lambda: None) if cpu else torch.cuda.synchronize, window="load")
    fast.save(run.folder / "traces" / f"fast-{fast.source_name}")
    for x, tr in smi.items():
        tr.save(run.folder / "traces" / f"smi-{x:g}s")
    rows, info = compare_to_counter(STUDY_WINDOW, fast, smi, cfg.base_interval_s)
    atomic_write_text(run.folder / "errors.csv", pd.DataFrame(rows).to_csv(index=False))
    run.save_stage(STUDY_WINDOW, summary)
    window = fast.windows["load"]
    return run.finish({
        "window_s": info["window_s"], "reference_energy_j": info["counter_energy_j"],
        "reference_mean_power_w": info["counter_energy_j"] / info["window_s"],
        "reference_source": fast.source_name, "energy_measured_by": window.energy_source,
        "estimated": bool(window.estimated), "smi_achieved_interval_s": info["smi_achieved_interval_s"],
        "smi_failed_samples": info["smi_failed_samples"], "final_train_loss": trainer.history[-1].train_loss})


def study_errors(run: Run) -> pd.DataFrame:
    """The stored error table of one sampling study (one row per source, field and interval)."""
    return pd.read_csv(run.folder / "errors.csv")


def study_series(run: Run) -> dict[str, pd.DataFrame]:
    """Every stored power series of one study: ``{"fast-counter": samples, "smi-0.1s": ...}``."""
    return {name: t.samples for name, t in study_traces(run).items()}


def study_traces(run: Run) -> dict[str, Any]:
    """Every stored trace of one study (samples, windows, metadata), by series name."""
    return {p.name: read_trace(p) for p in sorted((run.folder / "traces").iterdir()) if p.is_dir()}


FIGURE5_COLUMN = "power_instant_w"  # the field Figure 5 draws (the paper plotted instantaneous power)


def window_means(traces: dict[str, Any], reference_w: float, column: str = FIGURE5_COLUMN,
                 window: str = "load") -> pd.DataFrame:
    """Figure 5's horizontal lines: each series' mean power over the training window, time-weighted.

    ``traces`` are :func:`study_traces`' (each holds its own ``window`` on its own clock). The mean
    is the trapezoid energy of ``column`` (``power_w`` where that column is empty) over the window
    divided by its length, so it is the errors table's energy over the same seconds, and
    ``rel_err_pct`` is against ``reference_w`` (the counter's mean over the same window).
    ``all_samples_mean_w`` is the plain mean of every sample, idle seconds before and after the
    window included: what the figure drew before, kept to show the difference.
    """
    from .tracer.summary import trapezoid_energy_j

    rows = []
    for name, tr in traces.items():
        w = tr.windows[window]
        d = tr.samples[tr.samples["valid"].astype(bool)] if "valid" in tr.samples else tr.samples
        col = column if column in d and d[column].notna().any() else "power_w"
        t, p = d["t_s"].to_numpy(float), d[col].to_numpy(float)
        gaps = np.diff(np.unique(t))
        hold = 2 * max(float(np.median(gaps)) if gaps.size else 0.0, float(tr.meta.get("requested_interval_s", 0.0)))
        energy_j, _ = trapezoid_energy_j(t, p, w.start_s, w.end_s, hold)
        window_s = w.end_s - w.start_s
        mean_w = energy_j / window_s if window_s > 0 else float("nan")
        rows.append({"series": name, "column": col, "window_start_s": w.start_s, "window_s": window_s,
                     "mean_power_w": mean_w, "all_samples_mean_w": float(np.nanmean(p)) if p.size else float("nan"),
                     "rel_err_pct": 100.0 * (mean_w / reference_w - 1.0) if reference_w else float("nan")})
    return pd.DataFrame(rows)


# --- notebooks 10 and 12: one KD job at several batch sizes, and on several GPU types ----------

LR_REFERENCE_BATCH = 64  # lr_scaling="linear": lr x batch_size / 64 (RepDistiller's batch size)


def study_lr(cfg: Resolved, batch_size: int) -> float:
    """The student learning rate at ``batch_size``: fixed, or scaled linearly from batch 64."""
    return cfg.lr * batch_size / LR_REFERENCE_BATCH if cfg.get("lr_scaling") == "linear" else cfg.lr


def distillation_params(cfg: Resolved, pair: str, batch_size: int | None = None) -> Resolved:
    """The ``distillation``-section parameters of the study's KD job for ``pair`` at ``batch_size``.

    The data and measurement parameters are the study's own (``cfg``), so the job's runs are
    ordinary distillation runs, cached and selected like notebook 04's.
    """
    shared = {k: cfg[k] for k in (*_config.COMMON_PARAMS, *_config.TRAINING_PARAMS) if k in cfg}
    bs = cfg.batch_size if batch_size is None else batch_size
    return _config.resolve("distillation", profile=cfg.profile, **(shared | {"batch_size": bs}), pairs=[pair],
                           methods=[cfg.method], teacher_epochs=cfg.teacher_epochs,
                           student_epochs=cfg.student_epochs, lr=study_lr(cfg, bs), acc_source="measured",
                           iec_shared=True)


def check_batch_sizes(cfg: Resolved) -> list[int]:
    """The study's batch sizes, each an int in [1, train_size]; ConfigError names a bad one."""
    sizes = list(cfg.batch_sizes)
    if not sizes:
        raise ConfigError("batch_size.batch_sizes is empty; give at least one batch size, e.g. [64, 128]")
    for b in sizes:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= cfg.train_size:
            raise ConfigError(f"batch_size.batch_sizes has {b!r}; every batch size must be an int in "
                              f"[1, train_size={cfg.train_size}]")
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"batch_size.batch_sizes={sizes} repeats a value")
    return sorted(sizes)


def _job_context(ctx: Context, params: Resolved) -> Context:
    return Context(params, ctx.device, ctx.dataset, ctx.store, ctx.environment)


def run_batch_size_study(ctx: Context, seed: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """Distil every pair with ``cfg.method`` at every batch size (cached runs are reused).

    The teacher of a pair is one run of kind ``teacher`` (RepDistiller's recipe, batch 64 whatever
    the student's batch), shared by every batch size and by notebooks 04 and 12: only the
    distillation stage varies, as in the paper's Figure 4.
    """
    from .distill.run import parse_pairs, run_distillation

    cfg = ctx.cfg
    sizes = check_batch_sizes(cfg)
    pairs = parse_pairs(cfg.pairs)
    out = []
    for pair, (teacher, student) in zip(cfg.pairs, pairs):
        for bs in sizes:
            job = _job_context(ctx, distillation_params(cfg, pair, bs))
            out.append(run_distillation(job, teacher, student, cfg.method, seed, progress=progress))
    return out


def run_gpu_type_job(ctx: Context, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """The paper's Table 4 job (KD of ``cfg.pair``) on this machine's GPU; cached per GPU model."""
    from .distill.run import parse_pairs, run_distillation

    ((teacher, student),) = parse_pairs([ctx.cfg.pair])
    return run_distillation(_job_context(ctx, distillation_params(ctx.cfg, ctx.cfg.pair)), teacher, student,
                            ctx.cfg.method, seed, progress=progress)


def stored_jobs(cfg: Resolved, pairs: list[str], batch_sizes: list[int | None]) -> pd.DataFrame:
    """The complete distillation runs of the study's jobs, on any hardware, with ``pair``."""
    from .distill.run import stored_distillations

    frames = [stored_distillations(distillation_params(cfg, pair, bs)).assign(pair=pair)
              for pair in pairs for bs in batch_sizes]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


EPOCH_FIELDS = {"window.elapsed_s": "elapsed_s", "window.energy_j": "energy_j",
                "window.mean_power_w": "mean_power_w", "window.mean_gpu_util_pct": "gpu_util_pct",
                "window.mean_mem_util_pct": "mem_util_pct", "window.max_mem_used_mib": "max_mem_used_mib"}


def epoch_table(runs: pd.DataFrame, store, stage: str = "distillation",
                keys: tuple[str, ...] = ("pair", "batch_size", "hardware", "seed")) -> pd.DataFrame:
    """One row per (run, epoch of ``stage``): time, energy, power, utilisation, training accuracy.

    ``runs`` are rows of :meth:`ResultsStore.load_results` (``run_id`` plus ``keys``); the
    epochs come from each run's stored stage summary (its per-epoch tracer windows).
    """
    rows = []
    for _, r in runs.iterrows():
        res = store.get(r["run_id"]).result
        if stage not in res["stages"]:
            raise KeyError(f"run {r['run_id']} has no stage {stage!r}; it has {', '.join(res['stages'])}")
        for e in res["stages"][stage].get("epochs", []):
            row = {"run_id": r["run_id"], **{k: r[k] for k in keys if k in r}, "epoch": e["epoch"],
                   "train_acc": e["train_acc"], "images": e["images"]}
            row |= {new: e.get(old, float("nan")) for old, new in EPOCH_FIELDS.items()}
            rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df["energy_wh"] = df["energy_j"] / 3600.0
        if "batch_size" in df and df["batch_size"].notna().all():
            df["batch_size"] = df["batch_size"].astype(int)
    return df


def per_epoch_summary(epochs: pd.DataFrame, keys: list[str], skip_first: bool = True) -> pd.DataFrame:
    """Per ``keys``: mean seconds and W·h per epoch, time-weighted mean power and utilisation.

    ``skip_first`` leaves out epoch 0 where later epochs exist: it holds the one-off costs
    (cuDNN autotuning, allocator growth) that the paper's per-epoch figures do not show.
    """
    def one(g: pd.DataFrame) -> pd.Series:
        steady = g[g["epoch"] > g["epoch"].min()] if skip_first and len(g) > 1 else g
        t = steady["elapsed_s"]
        tw = lambda col: float((steady[col] * t).sum() / t.sum()) if t.sum() > 0 else float("nan")  # noqa: E731
        return pd.Series({"epochs_averaged": len(steady), "elapsed_s_per_epoch": float(t.mean()),
                          "energy_wh_per_epoch": float(steady["energy_wh"].mean()),
                          "mean_power_w": tw("mean_power_w"), "gpu_util_pct": tw("gpu_util_pct"),
                          "mem_util_pct": tw("mem_util_pct"), "max_mem_used_mib": float(steady["max_mem_used_mib"].max()),
                          "images_per_s": float(steady["images"].sum() / t.sum()) if t.sum() > 0 else float("nan")})

    return epochs.groupby(keys, sort=True).apply(one, include_groups=False).reset_index()


def energy_to_accuracy(epochs: pd.DataFrame, keys: list[str], within: list[str]) -> pd.DataFrame:
    """Per ``keys``: W·h and seconds until the running training accuracy first reaches a target.

    The target of each ``within`` group (e.g. one pair on one GPU) is the lowest final training
    accuracy of its ``keys`` groups (e.g. batch sizes), so every one of them reaches it. Whole
    epochs from the first are counted.
    """
    last = epochs.sort_values("epoch").groupby(keys).train_acc.last()
    targets = last.groupby(within).min().rename("target_train_acc").reset_index()
    rows = []
    for key, g in epochs.merge(targets, on=within).groupby(keys, sort=True):
        g = g.sort_values("epoch")
        upto = g.iloc[:int((g["train_acc"] >= g["target_train_acc"]).to_numpy().argmax()) + 1]
        rows.append({**dict(zip(keys, key)), "target_train_acc": float(g["target_train_acc"].iloc[0]),
                     "epochs_to_target": len(upto), "energy_wh_to_target": float(upto["energy_wh"].sum()),
                     "elapsed_s_to_target": float(upto["elapsed_s"].sum())})
    return pd.DataFrame(rows)


def batch_size_findings(summary: pd.DataFrame, knee: int = 256, tolerance_pct: float = 5.0,
                        keys: tuple[str, ...] = ("pair", "hardware")) -> pd.DataFrame:
    """Where the energy per epoch is lowest, and the paper's claim tested per ``keys``.

    The paper: energy falls as the batch grows up to ``knee`` (256) and no further. Per group:
    the batch size of least energy per epoch, the change from ``knee`` to the largest batch, and
    ``verdict``: ``holds`` where energy fell from the smallest batch to ``knee`` and changed by less
    than ``tolerance_pct`` % past it, ``does not hold`` otherwise, ``untested`` where the grid does
    not reach both sides of ``knee``.
    """
    rows = []
    for key, g in summary.groupby(list(keys), sort=True):
        g = g.sort_values("batch_size")
        e = g.set_index("batch_size")["energy_wh_per_epoch"]
        best = int(e.idxmin())
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row |= {"least_energy_batch": best, "least_energy_wh_per_epoch": float(e.min()),
                "smallest_batch": int(e.index.min()), "largest_batch": int(e.index.max())}
        if knee in e.index and e.index.min() < knee < e.index.max():
            fall = 100.0 * (e[knee] / e.iloc[0] - 1.0)
            past = 100.0 * (e.loc[e.index > knee].min() / e[knee] - 1.0)
            row |= {"change_to_knee_pct": fall, "best_change_past_knee_pct": past,
                    "verdict": "holds" if fall < 0 and abs(past) < tolerance_pct else "does not hold"}
        else:
            row |= {"change_to_knee_pct": float("nan"), "best_change_past_knee_pct": float("nan"), "verdict": "untested"}
        rows.append(row)
    return pd.DataFrame(rows)


TABLE4_COLUMNS = {"gpu_util_pct": "gpu_util_percent", "mem_util_pct": "mem_util_percent",
                  "mean_power_w": "avg_power_w", "elapsed_s_per_epoch": "elapsed_s", "energy_wh_per_epoch": "energy_wh"}


def gpu_type_table(summary: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our per-epoch figures per GPU (``hardware``) beside the paper's Table 4 rows, in its columns.

    ``implied_energy_wh`` = mean power x time: the paper's rows do not all satisfy it, ours do
    up to the idle-to-busy edges of each epoch window.
    """
    ours = summary.rename(columns=TABLE4_COLUMNS | {"hardware": "gpu"})
    ours = ours.assign(source="measured")[["source", "gpu", *TABLE4_COLUMNS.values()]]
    theirs = paper.assign(source="paper")[["source", "gpu", *TABLE4_COLUMNS.values()]]
    out = pd.concat([ours, theirs], ignore_index=True)
    out["implied_energy_wh"] = out["avg_power_w"] * out["elapsed_s"] / 3600.0
    return out

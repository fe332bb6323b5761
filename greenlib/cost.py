"""What a profile will cost before it runs: GPU-hours and kWh predicted from measured per-epoch rates.

A profile's training work is a list of stages (:func:`plan`): which model or pair trains, for how
many epochs of how many images, at which batch size, per notebook. The results store of a profile
that did run (``quick``) gives measured rates (:func:`measured_rates`): joules and seconds per
image-epoch of each stage kind and key. :func:`predict` multiplies the two::

    rates = cost.measured_rates(ResultsStore(paths.results_dir("quick")))
    table = cost.predict(cost.plan("paper"), rates)
    cost.per_notebook(table)            # GPU-hours and kWh per notebook

Where the exact (kind, key, batch size) was not measured, the same key at another batch size is
used, scaled by the ratio of the two batch sizes' rates where some key of that kind was measured at
both (notebook 10 measures KD at 32-1024; flagged ``batch 128 scaled to 64``) and unscaled
otherwise (``batch size differs``); else the median rate per training activation of the same
method (the distiller or pruner after the key's ``/``) at other models, scaled to the key's
activations (``scaled by activations, same method``: CRD VGG13→VGG8 took 2.4 times the energy of KD
on the same pair), or of the whole kind where that method was never measured (``scaled by
activations``); else no estimate. The unit is the elements a training step writes per image
(:func:`training_activations`), not its FLOPs: these small networks train memory-bound, and
:func:`leave_one_out` on the stored runs shows the difference (pricing each measured stage from
the others on the paper store, FLOPs price the ResNet56 teacher 86% low and KD VGG13→VGG8 353%
high, activations 21% low and 4% high). NAS
stages are priced per image-epoch of the space size the rates were measured at: a larger space
(the paper's) costs more, so the prediction is a lower bound there.

Eager and graphed training run at different rates (``graph_capture``, docs/training.md): a planned
stage carries the step its profile asks for (``graph_capture``; NAS search and the sampling study
always eager), and is priced from stages stored with the same step (``graph_captured`` of their
record). Where no stage of that step was measured, it is priced from the other step's rates and its
``basis`` says so (``..., eager rate``): never a made-up conversion factor. Not counted: IEC windows, test
passes, data generation, process start-up; they are seconds against the GPU-days of training.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from . import config

J_PER_KWH = 3.6e6

# stage name in a stored run -> (kind, key of the run config, epochs of the run config)
_KEYS: dict[str, tuple[str, Callable[[Mapping[str, Any]], str], str]] = {
    "base_training": ("train", lambda c: c["model"], "epochs"),
    "teacher_training": ("train", lambda c: c["model"], "epochs"),  # a teacher run (greenlib.distill.teacher)
    "finetuning": ("finetune", lambda c: f"{c['model']}/{c['pruner']}", "finetune_epochs"),
    "pretrain": ("pretrain", lambda c: f"{c['teacher']}:{c['student']}/{c['method']}", "pretrain_epochs"),
    "distillation": ("distill", lambda c: f"{c['teacher']}:{c['student']}/{c['method']}", "epochs"),
    "search": ("nas_search", lambda c: c["strategy"], "search_epochs"),
    "retrain": ("nas_retrain", lambda c: c["strategy"], "retrain_epochs"),
}
_OWN_STAGE = {"base_training": "baseline"}  # runs that copy a shared stage (pruning's base) don't count it


@lru_cache(maxsize=None)
def _activations(model: str) -> float:
    from .models import model_info

    return float(model_info(model, num_classes=100)["activations_per_image"])


def training_activations(kind: str, key: str) -> float:
    """Elements written per training image of a stage key (forward = the model's activations,
    backward counted as twice those; a distiller's teacher runs forward only): the unit of the
    scaled fallback. NaN where the key names no zoo model (NAS)."""
    try:
        if kind in ("train", "finetune"):
            return 3.0 * _activations(key.split("/")[0])
        if kind in ("distill", "pretrain"):
            teacher, student = key.split("/")[0].split(":")
            return _activations(teacher) + 3.0 * _activations(student)
    except (KeyError, ValueError):
        return float("nan")
    return float("nan")


_RATE_COLUMNS = ["kind", "key", "batch_size", "hardware", "graph_captured", "j_per_image_epoch", "s_per_image_epoch",
                 "run_id"]


def measured_rates(store) -> pd.DataFrame:
    """Joules and seconds per image-epoch of every stored training stage, one row per (run, stage).

    Columns: kind, key, batch_size, hardware, graph_captured, j_per_image_epoch, s_per_image_epoch, run_id.
    ``graph_captured`` is the stage record's (runs stored before it was recorded trained eagerly).
    """
    rows = []
    for run in store.runs():
        res = run.result
        c = res["config"]
        for stage, summary in res.get("stages", {}).items():
            if stage not in _KEYS or _OWN_STAGE.get(stage, c.get("kind")) != c.get("kind"):
                continue
            kind, key_of, epochs_key = _KEYS[stage]
            epochs = len(summary.get("epochs") or []) or c.get(epochs_key)
            images = c.get("train_size")
            if not epochs or not images or not np.isfinite(summary.get("energy_j", np.nan)):
                continue
            try:
                key = key_of(c)
            except KeyError:
                continue
            n = float(epochs) * float(images)
            rows.append({"kind": kind, "key": key, "batch_size": c.get("batch_size"), "hardware": c.get("hardware"),
                         "graph_captured": bool(summary.get("graph_captured", False)),
                         "j_per_image_epoch": summary["energy_j"] / n, "s_per_image_epoch": summary["elapsed_s"] / n,
                         "run_id": res["run_id"]})
    return pd.DataFrame(rows, columns=_RATE_COLUMNS)



def reference_rates(root=None) -> pd.DataFrame:
    """:func:`measured_rates` of every committed rate store under ``root`` (default
    ``paths.rates_dir()``: ``data/measurements/rates/<name>/``), with a ``rates_store`` column.

    Those stores hold runs made only to price stages no profile's store measures at the size the
    paper trains, such as NAS at the paper's search and retraining sizes. A rate per image-epoch
    does not depend on the pixels, so they may run on the stand-in; their accuracy means nothing.
    """
    from . import paths
    from .results import ResultsStore

    root = paths.rates_dir() if root is None else root
    frames = [measured_rates(ResultsStore(d)).assign(rates_store=d.name)
              for d in sorted(p for p in Path(root).glob("*") if p.is_dir())]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=[*_RATE_COLUMNS, "rates_store"])
    return pd.concat(frames, ignore_index=True)


def plan(profile: str) -> pd.DataFrame:
    """Every training stage a full run of ``profile`` trains, per notebook (shared stages once).

    Columns: notebook, kind, key, batch_size, epochs, images, runs (seeds x repeats), graph_capture
    (the step the section asks for; NAS search and the sampling study train eagerly).
    """
    from .distill import registry
    from .distill.run import parse_pairs, pretrain_epochs
    from .distill.teacher import TEACHER_BATCH_SIZE
    from .nas.run import retrain_epochs

    rows: list[dict[str, Any]] = []

    def add(notebook, kind, key, cfg, epochs, batch_size=None, runs=None, graph=None):
        graph = bool(cfg.get("graph_capture", False)) if graph is None else graph
        rows.append({"notebook": notebook, "kind": kind, "key": key,
                     "batch_size": int(batch_size or cfg.batch_size), "epochs": int(epochs),
                     "images": int(cfg.train_size), "runs": int(runs or len(cfg.seeds)), "graph_capture": graph})

    def section(name):
        return config.resolve(name, profile=profile) if name in config.SECTIONS else None

    c = section("baselines")
    for m in c.models:
        add("01_baselines", "train", m, c, c.epochs)
    c = section("pruning")
    for m in c.models:
        add("02_pruning", "train", m, c, c.base_epochs)
        for p in c.pruners:
            add("02_pruning", "finetune", f"{m}/{p}", c, c.finetune_epochs)
            add("02_pruning", "finetune", f"{m}/{p}", c, c.short_finetune_epochs)  # notebook 02's comparison
    c = section("quantization")  # its base models are baselines: they train as the baselines section says
    for m in c.models:
        add("03_quantization", "train", m, c, c.base_epochs, graph=bool(section("baselines").graph_capture))

    def distill(nb, c, pairs, methods, batch_sizes=(None,)):
        for (t, s), pair in zip(parse_pairs(pairs), pairs):
            add(nb, "train", t, c, c.teacher_epochs, batch_size=TEACHER_BATCH_SIZE)  # RepDistiller's teacher batch
            for method in methods:
                for bs in batch_sizes:
                    add(nb, "distill", f"{pair}/{method}", c, c.student_epochs, batch_size=bs)
                    if registry.get(method).pretrains:
                        add(nb, "pretrain", f"{pair}/{method}", c, pretrain_epochs(c.student_epochs), batch_size=bs)

    c = section("distillation")
    distill("04_distillation", c, list(c.pairs), list(c.methods))
    c = section("nas")
    if c is not None:  # one run per strategy and search dataset; each searches and retrains
        for s in c.strategies:
            n = len(c.seeds) * len(c.search_classes)
            add("05_nas", "nas_search", s, c, c.search_epochs, runs=n, graph=False)  # train.EAGER_STAGES
            add("05_nas", "nas_retrain", s, c, retrain_epochs(c, s), runs=n)
    c = section("batch_size")
    distill("10_batch_size", c, list(c.pairs), [c.method], list(c.batch_sizes))
    c = section("sampling_rate")
    add("11_sampling_rate", "train", c.model, c, c.epochs, graph=False)
    c = section("gpu_type")
    distill("12_gpu_type", c, [c.pair], [c.method])
    df = pd.DataFrame(rows)
    # a stage two notebooks share (a base model, a teacher) trains once: the first notebook pays
    return df.drop_duplicates(["kind", "key", "batch_size", "epochs", "images", "runs", "graph_capture"]
                              ).reset_index(drop=True)


def predict(planned: pd.DataFrame, rates: pd.DataFrame, hardware: str | None = None) -> pd.DataFrame:
    """``planned`` with predicted ``energy_kwh``, ``gpu_hours`` and how each was estimated (``basis``).

    ``hardware`` restricts the rates to one GPU model (default: the one with most rates). Where
    ``planned`` has ``graph_capture`` and ``rates`` ``graph_captured``, each stage is priced from
    rates of its own step; where that step has none for it, from the other step's, and ``basis``
    ends in ``, eager rate`` (or ``, graphed rate``).
    """
    if rates.empty:
        raise ValueError("no measured training stages in the results store: run a profile first (make reproduce)")
    hardware, r = _on_hardware(rates, hardware)
    if r.empty:
        raise ValueError(f"no rates measured on {hardware!r}; measured on: {', '.join(rates['hardware'].unique())}")
    by_mode = "graph_capture" in planned and "graph_captured" in r
    pricers = ({mode: _pricer(r[r["graph_captured"] == mode]) for mode in (False, True)} if by_mode
               else {None: _pricer(r)})
    out = []
    for row in planned.itertuples(index=False):
        mode = bool(row.graph_capture) if by_mode else None
        basis, j, s = pricers[mode](row.kind, row.key, row.batch_size)
        if by_mode and basis == NO_MEASUREMENT:
            other, o_j, o_s = pricers[not mode](row.kind, row.key, row.batch_size)
            if other != NO_MEASUREMENT:
                basis, j, s = f"{other}, {'eager' if mode else 'graphed'} rate", o_j, o_s
        work = row.epochs * row.images * row.runs
        out.append({**row._asdict(), "energy_kwh": j * work / J_PER_KWH, "gpu_hours": s * work / 3600.0,
                    "basis": basis, "rates_from": hardware})
    return pd.DataFrame(out)


NO_MEASUREMENT = "no measurement"


def _on_hardware(rates: pd.DataFrame, hardware: str | None) -> tuple[str, pd.DataFrame]:
    """``hardware`` (default: the GPU model with most rates) and the rates measured on it."""
    if hardware is None:
        hardware = rates["hardware"].value_counts().idxmax()
    return hardware, rates[rates["hardware"] == hardware]


def leave_one_out(rates: pd.DataFrame, hardware: str | None = None) -> pd.DataFrame:
    """How well the fallbacks of :func:`predict` price a stage that *was* measured: each measured
    (kind, key) of a zoo model, priced at its most measured batch size from ``rates`` without
    any of its own rows, beside the measured median.

    Columns: kind, key, batch_size, graph_captured, basis, measured_j, predicted_j, j_error,
    measured_s, predicted_s, s_error (errors relative: +0.5 = predicted 50% too high). A key whose
    kind has no other zoo-model key is priced ``no measurement`` (NaN errors). The spread of
    ``j_error`` is what a ``scaled by activations`` price of an unmeasured stage can be trusted to.
    """
    cols = ["kind", "key", "batch_size", "graph_captured", "basis", "measured_j", "predicted_j", "j_error",
            "measured_s", "predicted_s", "s_error"]
    if rates.empty:
        return pd.DataFrame(columns=cols)
    _, r = _on_hardware(rates, hardware)
    r = r[[np.isfinite(training_activations(k, key)) for k, key in zip(r["kind"], r["key"])]]
    mode_col = "graph_captured" if "graph_captured" in r else None
    rows = []
    for (kind, key, *mode), own in r.groupby(["kind", "key", *([mode_col] if mode_col else [])], sort=True):
        rest = r[~((r["kind"] == kind) & (r["key"] == key))]
        if mode_col:
            rest = rest[rest[mode_col] == mode[0]]
        batch_size = own["batch_size"].value_counts().idxmax()
        at = own[own["batch_size"] == batch_size]
        j_meas, s_meas = at["j_per_image_epoch"].median(), at["s_per_image_epoch"].median()
        basis, j, s = _pricer(rest)(kind, key, batch_size) if len(rest) else (NO_MEASUREMENT, np.nan, np.nan)
        rows.append({"kind": kind, "key": key, "batch_size": int(batch_size),
                     "graph_captured": bool(mode[0]) if mode_col else None, "basis": basis,
                     "measured_j": j_meas, "predicted_j": j, "j_error": j / j_meas - 1.0,
                     "measured_s": s_meas, "predicted_s": s, "s_error": s / s_meas - 1.0})
    return pd.DataFrame(rows, columns=cols)


def _pricer(r: pd.DataFrame) -> Callable[[str, str, int], tuple[str, float, float]]:
    """``price(kind, key, batch_size) -> (basis, J, s per image-epoch)`` from the rates ``r``."""
    exact = r.groupby(["kind", "key", "batch_size"])[["j_per_image_epoch", "s_per_image_epoch"]].median()
    by_key = r.groupby(["kind", "key"])[["j_per_image_epoch", "s_per_image_epoch"]].median()
    acts = r.assign(a=[training_activations(k, key) for k, key in zip(r["kind"], r["key"])]).dropna(subset=["a"])
    acts = acts.assign(j=acts["j_per_image_epoch"] / acts["a"], s=acts["s_per_image_epoch"] / acts["a"],
                       method=[key.partition("/")[2] for key in acts["key"]])
    per_act = acts.groupby("kind")[["j", "s"]].median()
    per_act_method = acts[acts["method"] != ""].groupby(["kind", "method"])[["j", "s"]].median()

    def price(kind: str, key: str, batch_size: int) -> tuple[str, float, float]:
        if (kind, key, batch_size) in exact.index:
            j, s = exact.loc[(kind, key, batch_size)]
            return "measured", j, s
        if (kind, key) in by_key.index:
            j, s = by_key.loc[(kind, key)]
            measured_bs = r[(r["kind"] == kind) & (r["key"] == key)]["batch_size"].median()
            ratio = _batch_ratio(exact, kind, measured_bs, batch_size)
            if ratio is not None:
                return f"batch {int(measured_bs)} scaled to {batch_size}", j * ratio[0], s * ratio[1]
            return "batch size differs", j, s
        if kind in per_act.index and np.isfinite(training_activations(kind, key)):
            a, method = training_activations(kind, key), key.partition("/")[2]
            if method and (kind, method) in per_act_method.index:  # a distiller's or pruner's own rate
                j, s = per_act_method.loc[(kind, method)]
                return "scaled by activations, same method", j * a, s * a
            return "scaled by activations", per_act.loc[kind, "j"] * a, per_act.loc[kind, "s"] * a
        return NO_MEASUREMENT, np.nan, np.nan

    return price


def _batch_ratio(exact: pd.DataFrame, kind: str, from_bs: float, to_bs: int) -> tuple[float, float] | None:
    """Median (energy, time) ratio of ``to_bs`` over ``from_bs`` among keys of ``kind`` measured at
    both (notebook 10 measures them), or None."""
    if kind not in exact.index.get_level_values("kind"):
        return None
    k = exact.xs(kind, level="kind")
    if from_bs not in k.index.get_level_values("batch_size") or to_bs not in k.index.get_level_values("batch_size"):
        return None
    a, b = k.xs(from_bs, level="batch_size"), k.xs(to_bs, level="batch_size")
    both = a.index.intersection(b.index)
    if not len(both):
        return None
    ratio = (b.loc[both] / a.loc[both]).median()
    return float(ratio["j_per_image_epoch"]), float(ratio["s_per_image_epoch"])


def per_notebook(predicted: pd.DataFrame) -> pd.DataFrame:
    """GPU-hours and kWh per notebook and in total, with the share of energy from exact measurements."""
    def one(g: pd.DataFrame) -> pd.Series:
        e = g["energy_kwh"]
        total = e.sum(min_count=1)  # NaN, not 0, where no stage could be priced
        return pd.Series({"stages": len(g), "gpu_hours": g["gpu_hours"].sum(min_count=1), "energy_kwh": total,
                          "measured_share": float(e[g["basis"] == "measured"].sum() / total) if total > 0 else np.nan,
                          "not_estimated": int((g["basis"] == NO_MEASUREMENT).sum()),
                          # stages whose own step (eager or graphed) was never measured: priced at the other's
                          "other_step_rate": int(g["basis"].str.endswith((", eager rate", ", graphed rate")).sum())})

    per = predicted.groupby("notebook", sort=True).apply(one, include_groups=False).reset_index()
    total = one(predicted).to_frame().T.assign(notebook="total")
    return pd.concat([per, total[per.columns]], ignore_index=True)

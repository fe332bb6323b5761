"""The notebook's tables from stored distillation runs: accuracy measured or cited, TEC accounted.

The paper cites its distillation accuracies from the CRD paper (Tian et al. 2020, Tables 1-2;
``paper.load_crd()``) instead of measuring them. Both are kept side by side here, labelled, and
``acc_source`` picks the one Acc and G use.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import paper, report
from .teacher import TEACHER_STAGE

ACC_SOURCES: dict[str, str] = {
    "measured": "measured (ours)",
    "cited": "cited (CRD paper, Tian et al. 2020)",
}
KEYS: tuple[str, ...] = ("teacher", "student", "method", "hardware", "dataset")
TEC_PARTS: tuple[str, ...] = ("tec_teacher_wh", "tec_pretrain_wh", "tec_distill_wh", "tec_wh")


def _crd_top1(teacher: str, method: str, student: str | None = None) -> float:
    """The CRD paper's top-1 (a fraction) of its first row for ``teacher`` and ``method`` (and
    ``student``, unless None); NaN where it has none."""
    crd = paper.load_crd()
    hit = (crd["teacher"].str.lower() == teacher) & (crd["method"] == method)
    if student is not None:
        hit &= crd["student"].str.lower() == student
    return float(crd.loc[hit, "top1_percent"].iloc[0]) / 100 if hit.any() else float("nan")


def cited_accuracy(teacher: str, student: str, method: str) -> float:
    """The CRD paper's top-1 (a fraction) for this teacher, student and method; NaN where it has none."""
    return _crd_top1(teacher, method, student)


TEACHER_FROM_SCRATCH = "teacher (trained from scratch)"  # the CRD paper's row for the teacher itself


def cited_teacher_accuracy(teacher: str) -> float:
    """The CRD paper's top-1 (a fraction) of ``teacher`` trained from scratch; NaN where it has none."""
    return _crd_top1(teacher, TEACHER_FROM_SCRATCH)


def teacher_table(teachers: pd.DataFrame, distillations: pd.DataFrame) -> pd.DataFrame:
    """One row per stored teacher run: its accuracy beside the CRD paper's teacher, its TEC and
    training time, and how many of ``distillations`` use it (0: no student distilled from it yet).

    ``acc_percent`` and ``acc_cited_percent`` are percentages; ``train_hours`` is the training stage's
    wall time, summed over the machines a carried run ran on. ``weights_acc_percent``: the accuracy of
    the weights its students learned from, as each student run measured it (``teacher_weights_acc``;
    their mean, NaN where none recorded it): not ``acc_percent`` where the weights were lost and
    trained again (:func:`greenlib.experiments.stored_model` keeps the stored measurement).
    """
    cols = ["teacher", "seed", "hardware", "dataset", "epochs", "acc_percent", "acc_cited_percent",
            "weights_acc_percent", "tec_wh", "train_hours", "students", "run_id"]
    if teachers.empty:
        return pd.DataFrame(columns=cols)
    used = distillations["teacher_run_id"].value_counts() if len(distillations) else pd.Series(dtype=int)
    weights_acc = (distillations.groupby("teacher_run_id")["teacher_weights_acc"].mean()
                   if len(distillations) and "teacher_weights_acc" in distillations else pd.Series(dtype=float))
    out = pd.DataFrame({
        "teacher": teachers["model"], "seed": teachers["seed"], "hardware": teachers["hardware"],
        "dataset": teachers["dataset"], "epochs": teachers["epochs"].astype(int),
        "acc_percent": (100 * teachers["acc"]).round(2),
        "acc_cited_percent": [100 * cited_teacher_accuracy(t) for t in teachers["model"]],
        "weights_acc_percent": [round(100 * weights_acc.get(r, float("nan")), 2) for r in teachers["run_id"]],
        "tec_wh": teachers["tec_wh"], "train_hours": teachers["train_elapsed_s"] / 3600,
        "students": [int(used.get(r, 0)) for r in teachers["run_id"]], "run_id": teachers["run_id"]})
    return out.sort_values(["teacher", "seed", "hardware"]).reset_index(drop=True)


def with_accuracy(runs: pd.DataFrame, acc_source: str) -> pd.DataFrame:
    """``runs`` with ``acc_measured``, ``acc_cited`` (fractions) and ``acc`` set to the chosen one.

    ``acc_source``: ``measured`` or ``cited``; the label lands in an ``acc_source`` column.
    """
    if acc_source not in ACC_SOURCES:
        raise ValueError(f"acc_source={acc_source!r}; accepted: {', '.join(ACC_SOURCES)}")
    out = runs.copy()
    out["acc_measured"] = out["acc"]
    out["acc_cited"] = [cited_accuracy(t, s, m) for t, s, m in zip(out["teacher"], out["student"], out["method"])]
    out["acc"] = out[f"acc_{acc_source}"]
    out["acc_source"] = ACC_SOURCES[acc_source]
    return out


def distillation_table(runs: pd.DataFrame, acc_source: str, muis: Sequence[float] = (5e8, 1e9)) -> pd.DataFrame:
    """One row per (teacher, student, method, hardware, dataset): Table 3's columns (TEC, Acc, IEC,
    G at each MUI, tau = 2, Table 3's convention), the TEC's parts, and both accuracies (%).

    ``label`` is ``"<method> <teacher>→<student>"``. Rows without the chosen accuracy (a pair the
    CRD paper does not report, with ``cited``) have NaN Acc and G.
    """
    d = with_accuracy(runs, acc_source)
    # G is computed where there is an accuracy; rows without one keep NaN Acc and G
    table = report.greeness_table(d.assign(acc=d["acc"].fillna(0.0)), muis=muis, keys=KEYS)
    no_acc = set(d.loc[d["acc"].isna(), list(KEYS)].itertuples(index=False, name=None))
    blank = table[list(KEYS)].apply(tuple, axis=1).isin(no_acc)
    table.loc[blank, ["acc_percent", *[c for c in table.columns if c.startswith("G(")]]] = np.nan
    parts = (d.assign(acc_measured_percent=100 * d["acc_measured"], acc_cited_percent=100 * d["acc_cited"])
             .groupby(list(KEYS), sort=False)
             [[*TEC_PARTS[:-1], "acc_measured_percent", "acc_cited_percent"]].mean().reset_index())
    table = table.merge(parts, on=list(KEYS), how="left")
    table["label"] = table["method"] + " " + table["teacher"] + "→" + table["student"]
    table["acc_source"] = ACC_SOURCES[acc_source]
    return table


def plottable(table: pd.DataFrame) -> pd.DataFrame:
    """The rows G can be drawn for (finite Acc, TEC and IEC)."""
    ok = np.isfinite(table[["acc_percent", "tec_wh", "iec_wh"]].to_numpy(dtype=float)).all(axis=1)
    return table[ok].reset_index(drop=True)


def published_rows() -> pd.DataFrame:
    """Table 3's distillation rows, with zoo names (lower case) for teacher and student."""
    t3 = paper.load_table3()
    return t3[t3["family"] == "Distillation"].assign(
        teacher=lambda d: d["teacher"].str.lower(), student=lambda d: d["student"].str.lower(),
        hardware=paper.HARDWARE).reset_index(drop=True)


STAGE_KEYS: tuple[str, ...] = ("teacher", "student", "method", "seed", "hardware")


def stage_table(runs: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Every traced stage behind ``runs`` (Table 4's columns), one row each: the teachers' training
    (their teacher runs, method ``(teacher)``), each run's pre-training, distillation and inference,
    and the shared IEC runs (method ``(shared IEC)``) where ``iec_shared`` was on."""
    teachers = report.load_runs(profile, run_id=sorted(runs["teacher_run_id"].unique()))
    iec_ids = sorted(runs["iec_run_id"].dropna().unique()) if "iec_run_id" in runs else []
    iec = report.load_runs(profile, run_id=iec_ids) if iec_ids else pd.DataFrame()
    parts = [report.stage_table(teachers.assign(teacher=teachers["model"], student="", method="(teacher)"),
                                stages=(TEACHER_STAGE, "base_training"), keys=STAGE_KEYS),  # earlier: baselines
             report.stage_table(runs, stages=("pretrain", "distillation", "inference"), keys=STAGE_KEYS)]
    if len(iec):
        parts.append(report.stage_table(iec.assign(teacher="", student=iec["model"], method="(shared IEC)"),
                                        stages=("inference",), keys=STAGE_KEYS))
    return pd.concat(parts, ignore_index=True)

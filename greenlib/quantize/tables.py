"""The quantization notebook's tables, from stored runs: one row per deployment path.

A *path* is (precision, backend, where it ran): ``int8 · pytorch · cpu`` and ``int8 · tensorrt ·
cuda`` are two INT8 rows, never averaged together.
"""
from __future__ import annotations

import pandas as pd

from .. import paper, report
from ..models import nni_zoo_name
from .base import PRECISIONS

KEYS: tuple[str, ...] = ("model", "precision", "backend", "deploy_device", "deploy_hardware")
_EXTRA = ("tec_base_wh", "tec_calibration_wh", "latency_ms", "throughput_ips", "base_acc")
_PAPER_G = {"g_mui5e8_tau2_x1e4": "G(500M)", "g_mui1e9_tau2_x1e4": "G(1B)"}


def path_label(df: pd.DataFrame) -> pd.Series:
    """``precision · backend · device`` per row."""
    return df["precision"] + " · " + df["backend"] + " · " + df["deploy_device"]


def by_precision(df: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows sorted by model, then precision in PRECISIONS order, then ``extra``."""
    order = pd.Categorical(df["precision"], categories=PRECISIONS, ordered=True)
    return (df.assign(_p=order).sort_values(["model", "_p", *extra], kind="stable").drop(columns="_p")
            .reset_index(drop=True))


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3's columns per (model, path), seeds averaged: TEC (and its two parts), Acc, IEC,
    latency, G at MUI 5e8 and 1e9 (tau = 2, Acc as a fraction, x 1e4), plus ``path`` and the IEC's
    stack ``iec_stack`` (``PyTorch fp32, batch 128, TF32 off``)."""
    table = report.greeness_table(runs, keys=KEYS)
    extra = runs.groupby(list(KEYS), sort=False)[list(_EXTRA)].mean().reset_index()
    stack = runs["iec_stack"] if "iec_stack" in runs else pd.Series(None, index=runs.index, dtype=object)
    stacks = (runs.assign(iec_stack=stack.fillna("not recorded")).groupby(list(KEYS), sort=False)["iec_stack"]
              .agg(lambda v: ", ".join(dict.fromkeys(v))).reset_index())
    table = (table.merge(extra, on=list(KEYS)).merge(stacks, on=list(KEYS))
             .assign(base_acc_percent=lambda d: 100 * d["base_acc"]))
    return by_precision(table.drop(columns="base_acc").assign(path=path_label))


def paper_rows(models) -> pd.DataFrame:
    """The paper's Table 3 rows for ``models``: Quantization (TensorRT FP16/INT8) and the
    baseline as the fp32 row. Inference ran on a TITAN V (Section 4.1)."""
    t3 = paper.load_table3().assign(model=lambda d: d["model"].map(nni_zoo_name))  # VGG16 -> nni-vgg16
    rows = t3[t3["family"].isin(["Quantization", "Baseline"]) & t3["model"].isin(list(models))]
    quantized = rows["family"] == "Quantization"
    return rows.assign(precision=rows["method"].str.lower().where(quantized, "fp32"),
                       backend=pd.Series("tensorrt", index=rows.index).where(quantized, "baseline (not stated)"),
                       deploy_device="cuda", deploy_hardware="TITAN V (paper)", source="paper",
                       dataset=paper.DATASET).rename(columns=_PAPER_G)


def beside_paper(measured: pd.DataFrame) -> pd.DataFrame:
    """:func:`summary` rows and the paper's rows for the same models, a ``source`` column apart.
    The paper's G are its printed values; ours are computed from the measured TEC, Acc and IEC."""
    pub = paper_rows(measured["model"].unique())
    both = pd.concat([measured.assign(source="measured"), pub], ignore_index=True)
    cols = ["model", "precision", "backend", "deploy_hardware", "source", "tec_wh", "tec_calibration_wh",
            "acc_percent", "iec_wh", "latency_ms", "G(500M)", "G(1B)"]
    return by_precision(both[[c for c in cols if c in both]], extra=("source",))


def kernels(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per stored run: where it ran, its kernel path, the int8 ops the profiler saw."""
    cols = ["model", "precision", "backend", "deploy_hardware", "seed", "kernel_path", "int8_kernels",
            "calibration_images_used", "backend_reason"]
    return by_precision(runs[cols].astype({"calibration_images_used": int}), extra=("backend", "seed"))


def caption_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``hardware`` saying where inference ran when it is not where training ran,
    for :func:`greenlib.report.caption`."""
    differs = runs["deploy_hardware"] != runs["hardware"]
    return runs.assign(hardware=runs["hardware"].where(~differs, runs["hardware"] + " (training) / "
                                                       + runs["deploy_hardware"] + " (inference)"))

"""Pruned runs against their base model and against the paper: size ratios and fine-tune length.

- :func:`paper_pruning`: the paper's pruning rows (Table 5: VGG16, six pruners) beside its VGG16
  baseline: IEC ratio, TEC above the baseline and how many base-training epochs that is, and the
  crossover MUI with the baseline.
- :func:`size_ratios`: each stored pruned model's FLOP, parameter and IEC ratio to its base, with
  the paper's IEC ratio for the same model and pruner.
- :func:`finetune_comparison`: G and crossover with the base model for several fine-tune lengths
  (notebook 02 compares ``short_finetune_epochs`` with ``finetune_epochs``).

Every number comes from stored runs (``stored_prunings``) or ``data/paper/``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import metric, paper
from ..models import nni_zoo_name
from ..report import mui_label

PAPER_BASE_EPOCHS = 160  # Section 4.1: "the base models ... are firstly trained for 160 epochs"


def paper_pruning(tau: float = 2.0) -> pd.DataFrame:
    """The paper's pruning rows with their baseline's numbers beside them, one row per pruner.

    Columns: ``model`` (zoo name, ``nni-vgg16``), ``method``, ``tec_wh``, ``acc_percent``,
    ``iec_wh``, ``base_tec_wh``, ``base_acc_percent``, ``base_iec_wh``, ``iec_ratio`` (pruned over
    baseline IEC), ``tec_over_base_wh`` (prune + fine-tune, W·h), ``base_epochs_equivalent`` (that
    energy in epochs of the baseline's 160-epoch training) and ``crossover_mui`` (the MUI above
    which the pruned model's G at ``tau`` beats the baseline's; NaN if never).
    """
    t5 = paper.load_table5()
    base = (t5[t5["family"] == "Baseline"][["model", "tec_wh", "acc_percent", "iec_wh"]]
            .rename(columns=lambda c: c if c == "model" else f"base_{c}"))
    rows = t5[t5["family"] == "Pruning"].merge(base, on="model", how="left", validate="many_to_one")
    if rows["base_tec_wh"].isna().any():
        raise ValueError(f"Table 5 has no baseline for {sorted(set(rows.loc[rows['base_tec_wh'].isna(), 'model']))}")
    over = rows["tec_wh"] - rows["base_tec_wh"]
    out = rows.assign(
        model=rows["model"].map(nni_zoo_name),
        iec_ratio=rows["iec_wh"] / rows["base_iec_wh"],
        tec_over_base_wh=over,
        base_epochs_equivalent=over / (rows["base_tec_wh"] / PAPER_BASE_EPOCHS),
        crossover_mui=metric.crossover_mui(rows["acc_percent"], rows["tec_wh"], rows["iec_wh"],
                                           rows["base_acc_percent"], rows["base_tec_wh"], rows["base_iec_wh"],
                                           tau, acc_unit="percent"))
    cols = ["model", "method", "tec_wh", "acc_percent", "iec_wh", "base_tec_wh", "base_acc_percent", "base_iec_wh",
            "iec_ratio", "tec_over_base_wh", "base_epochs_equivalent", "crossover_mui"]
    return out[cols].reset_index(drop=True)


def size_ratios(runs: pd.DataFrame, keys: Sequence[str] = ("model", "method", "hardware")) -> pd.DataFrame:
    """Each pruned model's size and IEC against its base, beside the paper's IEC ratio.

    ``runs`` are stored pruning runs (``stored_prunings``). One row per ``keys`` (seeds averaged):
    ``scope_applied``, ``flops_ratio``, ``params_ratio``, ``iec_ratio`` (measured IEC over the
    base run's) and ``paper_iec_ratio`` (Table 5's, where the paper has that model and pruner).
    """
    cols = [*keys, "scope_applied", "flops_ratio", "params_ratio", "iec_ratio", "paper_iec_ratio"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    d = runs.assign(iec_ratio=runs["iec_wh"] / runs["base_iec_wh"])
    agg = d.groupby(list(keys), sort=False).agg(
        scope_applied=("scope_applied", "first"), flops_ratio=("flops_ratio", "mean"),
        params_ratio=("params_ratio", "mean"), iec_ratio=("iec_ratio", "mean")).reset_index()
    pub = paper_pruning()[["model", "method", "iec_ratio"]].rename(columns={"iec_ratio": "paper_iec_ratio"})
    return agg.merge(pub, on=["model", "method"], how="left")[cols]


def finetune_comparison(runs: pd.DataFrame, muis: Sequence[float] = (5e8, 1e9), tau: float = 2.0,
                        scale: float = paper.TABLE3.scale,
                        keys: Sequence[str] = ("model", "pruner", "hardware")) -> pd.DataFrame:
    """G and the crossover with the base model, per fine-tune length, from stored pruning runs.

    ``runs`` may hold runs of several ``finetune_epochs`` (e.g. ``stored_prunings(cfg, short)``
    and ``stored_prunings(cfg)`` concatenated). One row per ``keys`` and ``finetune_epochs``
    (seeds averaged), plus one ``baseline`` row per model and hardware built from the runs' base
    metrics (``base_acc``, ``tec_base_wh``, ``base_iec_wh``). Columns: ``label``, the keys,
    ``finetune_epochs`` (NaN for the baseline), ``acc_percent``, ``tec_wh``, ``tec_finetune_wh``,
    ``iec_wh``, ``G(<mui>)`` at each MUI (Acc as a fraction, times ``scale``, as Table 3), and
    ``crossover_mui``: the MUI above which the pruned model's G beats its base's (NaN if never).
    """
    if runs.empty:
        return pd.DataFrame(columns=["label", *keys, "finetune_epochs", "acc_percent", "tec_wh", "iec_wh",
                                     "crossover_mui"])
    d = runs.assign(acc_percent=100 * runs["acc"], base_acc_percent=100 * runs["base_acc"])
    group = [*keys, "finetune_epochs"]
    agg = d.groupby(group, sort=False).agg(
        acc_percent=("acc_percent", "mean"), tec_wh=("tec_wh", "mean"), tec_finetune_wh=("tec_finetune_wh", "mean"),
        iec_wh=("iec_wh", "mean"), base_acc_percent=("base_acc_percent", "mean"),
        base_tec_wh=("tec_base_wh", "mean"), base_iec_wh=("base_iec_wh", "mean"),
        n_seeds=("acc", "size")).reset_index()
    agg["crossover_mui"] = metric.crossover_mui(agg["acc_percent"], agg["tec_wh"], agg["iec_wh"],
                                                agg["base_acc_percent"], agg["base_tec_wh"], agg["base_iec_wh"],
                                                tau, acc_unit="percent")
    agg["label"] = [f"{p} · {int(e)} ft epochs" for p, e in zip(agg["pruner"], agg["finetune_epochs"])]
    base_keys = [k for k in keys if k != "pruner"]
    base = (agg.groupby(base_keys, sort=False)[["base_acc_percent", "base_tec_wh", "base_iec_wh"]].mean()
            .reset_index().rename(columns={"base_acc_percent": "acc_percent", "base_tec_wh": "tec_wh",
                                           "base_iec_wh": "iec_wh"}))
    base = base.assign(pruner="baseline", finetune_epochs=np.nan, tec_finetune_wh=np.nan, crossover_mui=np.nan,
                       label=base["model"] + " baseline")
    out = pd.concat([base, agg.drop(columns=["base_acc_percent", "base_tec_wh", "base_iec_wh"])], ignore_index=True)
    for mui in muis:
        out[f"G({mui_label(mui)})"] = scale * metric.greeness(out["acc_percent"].to_numpy() / 100,
                                                              out["tec_wh"].to_numpy(), out["iec_wh"].to_numpy(),
                                                              mui, tau=tau)
    lead = ["label", *keys, "finetune_epochs", "acc_percent", "tec_wh", "tec_finetune_wh", "iec_wh"]
    return out[lead + [c for c in out if c.startswith("G(")] + ["crossover_mui", "n_seeds"]]

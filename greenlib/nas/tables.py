"""The tables and the energy-split figure of notebook 05, from stored NAS runs (``stored_nas``).

Measured rows meet the paper's NAS rows (Table 3: ProxylessNAS and DARTS, searched on CIFAR-100
and on CIFAR-10, evaluated on CIFAR-100) by ``method`` and ``search_classes`` (100 or 10): the
dataset columns keep their own names, so a stand-in is never shown as CIFAR.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from .. import config, paper, report

KEYS: tuple[str, ...] = ("method", "search_classes", "strategy", "space", "search_dataset", "dataset", "hardware")
EXTRA: tuple[str, ...] = ("tec_search_wh", "tec_retrain_wh", "params", "flops_per_image", "search_elapsed_s",
                          "retrain_elapsed_s")
_PAPER_SEARCH_CLASSES = {"CIFAR100": 100, "CIFAR10": 10}  # Table 3's search_dataset column


def greeness(runs: pd.DataFrame, muis: Sequence[float] = (5e8, 1e9)) -> pd.DataFrame:
    """One row per (method, search dataset, hardware): TEC (search + retrain), Acc, IEC, G, and the split."""
    table = report.greeness_table(runs, muis=muis, keys=KEYS)
    if runs.empty:
        return table
    extra = runs.groupby(list(KEYS), sort=False)[list(EXTRA)].mean().reset_index()
    out = table.merge(extra, on=list(KEYS), how="left")
    out["search_share_percent"] = 100 * out["tec_search_wh"] / out["tec_wh"]
    return out


def published_rows() -> pd.DataFrame:
    """Table 3's NAS rows, with ``search_classes`` (100 or 10) from their search dataset."""
    t3 = paper.load_table3()
    nas = t3[t3["family"] == "NAS"].copy()
    nas["search_classes"] = nas["search_dataset"].map(_PAPER_SEARCH_CLASSES)
    if nas["search_classes"].isna().any():
        raise ValueError(f"Table 3 NAS rows with an unknown search dataset: "
                         f"{sorted(set(nas['search_dataset']) - set(_PAPER_SEARCH_CLASSES))}")
    return nas.reset_index(drop=True)


def beside_paper(table: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Measured and published rows per (method, search classes), each with its own search dataset."""
    side = report.beside_paper(table, published, keys=("method", "search_classes"))
    names = pd.concat([table.assign(source="measured"), published.assign(source="paper")], ignore_index=True)
    names = names.groupby(["source", "method", "search_classes"])["search_dataset"].agg(
        lambda s: ", ".join(sorted(set(map(str, s)))))
    side.insert(3, "search_dataset", [names.get((r.source, r.method, r.search_classes)) for r in side.itertuples()])
    return side


def accuracy_gap(table: pd.DataFrame, published: pd.DataFrame, search_epochs: int,
                 retrain_epochs: dict[str, int]) -> pd.DataFrame:
    """:func:`greenlib.report.accuracy_gap` for :func:`greeness`'s ``table`` against
    :func:`published_rows`, with each method's budget (``retrain_epochs``: per strategy) and
    whether it is the paper profile's, the paper's (for ProxylessNAS, whose retraining the paper
    does not state, NNI's example's 300: docs/nas.md)."""
    methods = dict(zip(table["method"], table["strategy"])) if not table.empty else {}
    unknown = sorted(set(methods.values()) - set(retrain_epochs))
    if unknown:
        raise ValueError(f"accuracy_gap: no retraining epochs for strategy {unknown[0]!r}")
    paper_cfg = config.profile_defaults("nas", "paper")
    ours = " / ".join(f"{m}: search {search_epochs} + retraining {retrain_epochs[s]}" for m, s in methods.items())
    same = {m: (search_epochs, retrain_epochs[s]) == (paper_cfg["search_epochs"], paper_cfg.get(f"{s}_retrain_epochs"))
            for m, s in methods.items()}
    return report.accuracy_gap(table, published, ["method", "search_classes"], f"{ours or '-'} epochs",
                               "retraining 600 (DARTS) / not stated (ProxylessNAS; NNI's example: 300) epochs",
                               same_budget=same)


def architecture_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The exported architectures: one row per (run, choice) with the chosen value."""
    rows = []
    for _, r in runs.iterrows():
        for label, choice in dict(r["architecture"]).items():
            rows.append({"strategy": r["strategy"], "search_dataset": r["search_dataset"], "seed": r["seed"],
                         "hardware": r["hardware"], "choice": label, "value": str(choice)})
    return pd.DataFrame(rows)


def split_label(table: pd.DataFrame) -> pd.Series:
    """``Darts · search synthetic10`` (hardware added where several GPUs are in the table)."""
    label = table["method"] + " · search " + table["search_dataset"].astype(str)
    if table["hardware"].nunique() > 1:
        label = label + " · " + table["hardware"].astype(str)
    return label


def plot_energy_split(table: pd.DataFrame, published: pd.DataFrame, *, title: str):
    """Measured TEC split into search and retraining (left), beside the paper's TEC totals (right: the
    paper does not publish the split). Returns the matplotlib Figure."""
    from .. import plotting

    fig, (ax_m, ax_p) = plotting.subplots(2, width=6.0, height=3.6)
    labels = split_label(table)
    ax_m.barh(labels, table["tec_search_wh"], color="#c44e52", label="search")
    ax_m.barh(labels, table["tec_retrain_wh"], left=table["tec_search_wh"], color="#4c72b0", label="retrain")
    for y, (s, r) in enumerate(zip(table["tec_search_wh"], table["tec_retrain_wh"])):
        ax_m.text(s + r, y, f" {100 * s / (s + r):.0f}% search", va="center", fontsize=8)
    ax_m.set_xlabel("TEC (W·h)")
    ax_m.set_xlim(0, 1.3 * float((table["tec_search_wh"] + table["tec_retrain_wh"]).max()))  # room for the labels
    ax_m.set_title(f"measured: search + retrain\n{title}", fontsize=9)
    ax_m.legend(loc="upper right", fontsize=8, frameon=False)
    pub_labels = published["method"] + " · search " + published["search_dataset"]
    ax_p.barh(pub_labels, published["tec_wh"], color="#8c8c8c")
    ax_p.set_xlabel("TEC (W·h)")
    ax_p.set_title(f"published TEC (split not published)\n{paper.DATASET}; {paper.HARDWARE}", fontsize=9)
    return fig


def plottable(table: pd.DataFrame) -> pd.DataFrame:
    """Rows whose G can be drawn on log axes (a positive accuracy), labelled for the legend."""
    return table[table["acc_percent"] > 0].assign(label=lambda d: split_label(d))

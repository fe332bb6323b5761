"""From the results store to the tables and captions notebooks show.

Every table a notebook saves comes through :func:`greeness_table`, so G is computed one way,
and every caption through :func:`caption`, so each names its dataset, hardware and profile.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from . import metric
from .paper import TABLE3
from .paths import results_dir
from .results import ResultsStore


def load_runs(profile: str, **equal: Any) -> pd.DataFrame:
    """Complete runs of ``profile`` as one row each, filtered by column equalities.

    A list/tuple value means "any of these" (``kind="baseline", model=["vgg16", "resnet18"]``),
    except for a column that holds lists (stored as tuples), which must equal it.
    """
    df = ResultsStore(results_dir(profile)).load_results()
    if df.empty:
        return df
    for col, want in equal.items():
        if col not in df:
            return df.iloc[0:0]
        values = df[col]
        if values.map(lambda v: isinstance(v, tuple)).any():  # a list-valued config entry: equal lists
            df = df[values.map(lambda v: v == tuple(want))]
        elif isinstance(want, (list, tuple, set)):
            df = df[values.isin(want)]
        else:
            df = df[values == want]
    return df.reset_index(drop=True)


def mui_label(mui: float) -> str:
    """5e8 -> '500M', 1e9 -> '1B' (the paper's column names)."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if mui >= div:
            v = mui / div
            return f"{v:g}{suffix}"
    return f"{mui:g}"


def greeness_table(df: pd.DataFrame, muis: Sequence[float] = (5e8, 1e9), tau: float = 2.0,
                   keys: Sequence[str] = ("model",), scale: float = TABLE3.scale) -> pd.DataFrame:
    """The paper's Table 3 columns from measured runs: TEC (W·h), Acc (%), IEC (W·h), G(MUI).

    Runs sharing ``keys`` (e.g. several seeds) are averaged, with ``*_std`` columns and ``n_seeds``.
    G uses Acc as a fraction, times ``scale`` (1e4, as Table 3 prints it). ``label`` joins the
    keys that differ between rows (the name :mod:`greenlib.plotting` draws).
    """
    if df.empty:
        return pd.DataFrame(columns=[*keys, "tec_wh", "acc_percent", "iec_wh"])
    d = df.assign(acc_percent=100 * df["acc"])
    agg = d.groupby(list(keys), sort=False).agg(
        tec_wh=("tec_wh", "mean"), tec_wh_std=("tec_wh", "std"), acc_percent=("acc_percent", "mean"),
        acc_percent_std=("acc_percent", "std"), iec_wh=("iec_wh", "mean"), iec_wh_std=("iec_wh", "std"),
        n_seeds=("acc", "size")).reset_index()
    for mui in muis:
        agg[f"G({mui_label(mui)})"] = scale * metric.greeness(agg["acc_percent"].to_numpy() / 100,
                                                              agg["tec_wh"].to_numpy(), agg["iec_wh"].to_numpy(),
                                                              mui, tau=tau)
    if (agg["n_seeds"] <= 1).all():
        agg = agg.drop(columns=[c for c in agg if c.endswith("_std")])
    varying = [k for k in keys if agg[k].nunique() > 1] or list(keys[:1])
    agg.insert(0, "label", agg[varying].astype(str).agg(" · ".join, axis=1))
    return agg


def describe(values: Iterable[Any]) -> str:
    vals = sorted({str(v) for v in values if v is not None and v == v})
    return ", ".join(vals) if vals else "unknown"


def describe_datasets(values: Iterable[Any]) -> str:
    """Dataset descriptions once each: ``X`` and ``X; first 10,000 train / 10,000 test images`` (the
    same data, one a subset) read ``X; all images or first 10,000 train / 10,000 test images``."""
    variants: dict[str, list[str]] = {}
    for v in sorted({str(v) for v in values if v is not None and v == v}):
        base, _, subset = v.partition("; ")
        variants.setdefault(base, []).append(subset)
    if not variants:
        return "unknown"
    out = []
    for base, subsets in variants.items():
        if subsets == [""]:
            out.append(base)
        else:
            out.append(f"{base}; " + " or ".join(x or "all images" for x in sorted(subsets, key=bool)))
    return ", ".join(out)


def caption(df: pd.DataFrame, profile: str, what: str = "") -> str:
    """``<what> | dataset: ... | hardware: ... (energy: <source>[, estimated]) | profile: ...``."""
    if df.empty:
        return f"{what} | no stored runs | profile: {profile}".strip(" |")
    datasets = describe_datasets(df["dataset_description"].where(df["dataset_description"].notna(), df["dataset"])
                                 if "dataset_description" in df else df["dataset"])
    hw = describe(df["hardware"]) if "hardware" in df else "unknown"
    src = describe(df["energy_measured_by"]) if "energy_measured_by" in df else "unknown"
    est = ", ESTIMATED" if "estimated" in df and df["estimated"].astype(bool).any() else ""
    parts = [what] if what else []
    parts += [f"dataset: {datasets}", f"hardware: {hw} (energy: {src}{est})", f"profile: {profile}"]
    return " | ".join(parts)


def short_caption(df: pd.DataFrame, profile: str) -> str:
    """``dataset · hardware · profile`` for figure titles (energy marked when estimated)."""
    if df.empty:
        return f"no runs · {profile}"
    est = " (energy estimated)" if "estimated" in df and df["estimated"].astype(bool).any() else ""
    return f"{describe(df['dataset'])} · {describe(df['hardware'])}{est} · {profile}"


def _printed_g_name(col: str) -> str | None:
    # paper columns look like g_mui5e8_tau2_x1e4 -> "G(500M)" (tau 2 only: Table 3's)
    m = re.match(r"^g_mui(?P<mui>[\d.]+e\d+)_tau2(_x1e4)?$", col)
    return f"G({mui_label(float(m['mui']))})" if m else None


def beside_paper(measured: pd.DataFrame, published: pd.DataFrame, keys: Sequence[str] = ("model",)) -> pd.DataFrame:
    """Measured rows and the paper's rows for the same ``keys`` in one table, a ``source`` column apart.

    The paper's G are its printed Table 3 values (τ = 2, Acc fraction, ×1e4), not recomputed.
    """
    g_cols = {c: _printed_g_name(c) for c in published.columns if _printed_g_name(c)}
    pub = published.rename(columns=g_cols).assign(source="paper")
    meas = measured.assign(source="measured")
    cols = [*keys, "source", "hardware", "dataset", "tec_wh", "acc_percent", "iec_wh",
            *[c for c in measured.columns if c.startswith("G(")]]
    both = pd.concat([meas, pub[pub[list(keys)].apply(tuple, axis=1).isin(meas[list(keys)].apply(tuple, axis=1))]],
                     ignore_index=True)
    return both[[c for c in cols if c in both]].sort_values([*keys, "source"], kind="stable").reset_index(drop=True)


SHORT_BY_POINTS = 2.0
"""How far below the published top-1 accuracy (percentage points) a row is called short."""


SAME_EPOCHS = "at the same epochs"
"""The end of :func:`accuracy_gap`'s note on a short row trained for the published epochs: its gap is not
the epoch budget's."""


def accuracy_gap(measured: pd.DataFrame, published: pd.DataFrame, keys: Sequence[str], our_budget: str,
                 published_budget: str, published_acc: str = "acc_percent",
                 short_by: float = SHORT_BY_POINTS, same_budget: bool | Mapping[Any, bool] = False
                 ) -> pd.DataFrame:
    """Our top-1 accuracy beside the published one for the same ``keys``, with both epoch budgets.

    One row per measured row (mean over its rows where ``keys`` repeat): ``acc_percent`` (ours),
    ``our_epochs``, ``published_acc_percent`` (``published``'s ``published_acc`` column; NaN where
    the paper has no such row), ``published_epochs``, ``gap_points`` (ours minus published) and
    ``note``: ``more than 2 points short`` (``short_by``), ``within 2 points``, ``above`` or
    ``no published value``. ``same_budget``: whether ours trained for the published epochs, for
    every row or per value of ``keys[0]`` (absent: False); a short row that did says so
    (:data:`SAME_EPOCHS`), so that :func:`gap_summary` does not blame the epochs.
    """
    keys = list(keys)
    missing = [k for k in [*keys, "acc_percent"] if k not in measured]
    if missing:
        raise ValueError(f"accuracy_gap: measured rows lack {missing}; they have {list(measured.columns)}")
    if published_acc not in published:
        raise ValueError(f"accuracy_gap: published rows lack {published_acc!r}")
    ours = measured.groupby(keys, sort=False, dropna=False)["acc_percent"].mean().reset_index()
    pub = (published[[*keys, published_acc]].dropna(subset=[published_acc])
           .groupby(keys, sort=False)[published_acc].mean().rename("published_acc_percent").reset_index())
    out = ours.merge(pub, on=keys, how="left")
    out.insert(len(keys) + 1, "our_epochs", our_budget)
    out["published_epochs"] = published_budget
    out["gap_points"] = (out["acc_percent"] - out["published_acc_percent"]).round(2)

    same = (out[keys[0]].map(lambda k: bool(same_budget.get(k, False))) if isinstance(same_budget, Mapping)
            else pd.Series(bool(same_budget), index=out.index))

    def note(gap: float, same: bool) -> str:
        if pd.isna(gap):
            return "no published value"
        if gap < -short_by:
            return f"more than {short_by:g} points short" + (f", {SAME_EPOCHS}" if same else "")
        return "above" if gap > 0 else f"within {short_by:g} points"

    out["note"] = [note(g, s) for g, s in zip(out["gap_points"], same)]
    return out


def gap_summary(gap: pd.DataFrame, short_by: float = SHORT_BY_POINTS) -> str:
    """One line on :func:`accuracy_gap`'s table: how many rows fall more than ``short_by`` points short."""
    known = gap.dropna(subset=["published_acc_percent"])
    if known.empty:
        return "no row has a published accuracy to compare with"
    short = known[known["gap_points"] < -short_by]
    if known["our_epochs"].nunique() == 1 and known["published_epochs"].nunique() == 1:
        budgets = f"ours: {known['our_epochs'].iloc[0]}; published: {known['published_epochs'].iloc[0]}"
    else:
        budgets = "the epoch budgets of each row are in the table"
    if short.empty:
        return f"every row with a published accuracy is within {short_by:g} points of it or above ({budgets})"
    n_same = int(short["note"].str.endswith(SAME_EPOCHS).sum())
    if n_same == 0:
        why = "the epoch budgets differ"
    elif n_same == len(short):
        why = "trained for the published epochs, so the epochs are not why (docs/campaign.md, 'Expected gaps')"
    else:
        why = (f"{len(short) - n_same} of them trained for other epoch budgets than the published ones, {n_same} "
               "for the same (docs/campaign.md, 'Expected gaps')")
    return (f"{len(short)} of {len(known)} rows are more than {short_by:g} points below the published accuracy "
            f"(median gap {short['gap_points'].median():+.1f} points; {budgets}): {why}")


def stage_table(runs: pd.DataFrame, stages: Sequence[str], keys: Sequence[str] = ("model", "seed", "hardware")
                ) -> pd.DataFrame:
    """One row per (run, stage): time, energy, mean power and utilisation (Table 4's columns)."""
    fields = ("elapsed_s", "energy_wh", "mean_power_w", "mean_gpu_util_pct", "mean_mem_util_pct",
              "energy_source", "estimated")
    rows = []
    for _, r in runs.iterrows():
        for s in stages:
            if pd.notna(r.get(f"{s}.elapsed_s")):  # runs without this stage are left out
                rows.append({**{k: r[k] for k in keys}, "stage": s, **{f: r.get(f"{s}.{f}") for f in fields}})
    return pd.DataFrame(rows)


def slug(text: str) -> str:
    """A file-name-safe lower-case form of ``text``: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    out = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    if not out:
        raise ValueError(f"slug: {text!r} has no letters or digits")
    return out

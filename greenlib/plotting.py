"""Figures of the Greeness metric shared by the notebooks: G vs MUI, G vs tau, winner regions.

Each function takes a table with one row per method (``label``, ``acc_percent``, ``tec_wh``,
``iec_wh``; see :mod:`greenlib.metric`), a ``title`` the caller fills with the dataset, hardware
and profile, and the G convention (``acc_unit``, ``scale``). It returns the matplotlib Figure;
pass ``ax`` to draw into a panel of a bigger figure. Save with ``greenlib.io.save_figure``.
Colours follow the table's row order (pass ``palette`` to pin them across figures).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from greenlib import metric

STYLE = "whitegrid"


def g_label(acc_unit: str, scale: float = 1.0, tau: float | None = None) -> str:
    """Axis label naming G's unit and convention, e.g. ``G in 1/(W·h) (tau = 2; Acc as fraction; x 1e4)``.

    G = Acc^tau / (MUI IEC + TEC) with energies in W·h: per W·h, times %^tau where Acc is in %.
    """
    metric.check_acc_unit(acc_unit)
    unit = "1/(W·h)" if acc_unit == "fraction" else "%^tau/(W·h)"
    parts = [f"tau = {tau:g}"] if tau is not None else []
    parts.append("Acc in %" if acc_unit == "percent" else "Acc as fraction")
    if scale != 1:
        exp = np.log10(scale)
        parts.append(f"x 1e{exp:.0f}" if exp == round(exp) else f"x {scale:g}")
    return f"G in {unit} ({'; '.join(parts)})"


def method_palette(labels) -> dict[str, tuple]:
    """One colour per method label, in order (seaborn's ``deep`` palette, then ``husl``)."""
    labels = list(labels)
    colours = sns.color_palette("deep" if len(labels) <= 10 else "husl", len(labels))
    return dict(zip(labels, colours))


def paired_palette(*label_lists, key=lambda label: label) -> dict[str, tuple]:
    """One colour per ``key(label)`` over every list, so that a measured panel and a published one
    that name the same curve differently ('vgg13→vgg8' and 'CRD VGG13→VGG8') draw it alike.
    Colours go to the keys in order of first appearance, as in :func:`method_palette`."""
    labels = list(dict.fromkeys(str(x) for labels in label_lists for x in labels))
    keys = method_palette(dict.fromkeys(key(x) for x in labels))
    return {x: keys[key(x)] for x in labels}


def subplots(ncols: int, *, width: float = 5.2, height: float = 4.2):
    """A row of ``ncols`` styled panels: ``(fig, [ax, ...])`` to pass as ``ax=`` above."""
    with sns.axes_style(STYLE):
        fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False,
                                 layout="constrained")
    return fig, list(axes[0])


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    with sns.axes_style(STYLE):
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _style(ax) -> None:
    ax.set_facecolor("white")
    ax.grid(True, which="major", color="0.88", linewidth=0.8)
    ax.grid(True, which="minor", color="0.95", linewidth=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _drop_zero_g(curves: pd.DataFrame, ax) -> pd.DataFrame:
    """The curves without methods whose G is 0 everywhere (Acc = 0: nothing to draw on a log axis),
    each named in a note on the axes instead of an empty legend entry."""
    zero = [lab for lab, g in curves.groupby("label", sort=False)["g"] if not (g > 0).any()]
    if zero:
        _note(ax, f"not drawn, G = 0 (Acc = 0) on a log axis: {', '.join(map(str, zero))}")
    return curves[~curves["label"].isin(zero)]


def _note(ax, text: str, wrap: bool = False) -> None:
    """A small grey note in the axes' lower left corner: what the panel leaves out, and why."""
    ax.text(0.01, 0.01, text, transform=ax.transAxes, fontsize=7, color="0.3", ha="left", va="bottom", wrap=wrap)


def plot_g_vs_mui(table: pd.DataFrame, mui_min: float, mui_max: float, *, title: str,
                  tau: float = 2.0, acc_unit: str = "fraction", scale: float = 1.0,
                  n_points: int = 200, palette: dict | None = None, ax=None,
                  mark_crossovers: bool = False) -> Figure:
    """G against MUI on log-log axes, one curve per method (the paper's Figures 2a, 3, 6).

    ``mark_crossovers`` adds a dot where two curves cross inside the range (closed form).
    """
    curves = metric.greeness_curves(table, np.geomspace(mui_min, mui_max, n_points), tau,
                                    acc_unit=acc_unit, scale=scale)
    palette = palette or method_palette(table["label"])
    fig, ax = _axes(ax, (6.4, 4.4))
    curves = _drop_zero_g(curves, ax)
    sns.lineplot(data=curves, x="mui", y="g", hue="label", palette=palette, ax=ax, linewidth=1.8)
    if mark_crossovers:
        cross = metric.pairwise_crossovers(table, tau)
        cross = cross[(cross["mui"] >= mui_min) & (cross["mui"] <= mui_max)]
        rows = table.set_index("label")
        for _, c in cross.iterrows():
            r = rows.loc[c["a"]]
            g = metric.greeness(r["acc_percent"] / (100 / metric.check_acc_unit(acc_unit)), r["tec_wh"],
                                r["iec_wh"], c["mui"], tau, acc_unit) * scale
            ax.plot(c["mui"], g, "o", color="0.25", markersize=3.5, zorder=5)
    ax.set(xscale="log", yscale="log", xlabel="MUI (inferences per life cycle)",
           ylabel=g_label(acc_unit, scale, tau), title=title, xlim=(mui_min, mui_max))
    ax.legend(title=None, fontsize=8, frameon=False)
    _style(ax)
    return fig


def plot_g_vs_tau(table: pd.DataFrame, taus, *, mui: float, title: str,
                  acc_unit: str = "fraction", scale: float = 1.0, palette: dict | None = None,
                  ax=None) -> Figure:
    """G against tau at a fixed MUI, log y axis, one curve per method (the paper's Figure 2b)."""
    curves = metric.greeness_curves(table, mui, np.asarray(taus, dtype=float), acc_unit=acc_unit,
                                    scale=scale)
    palette = palette or method_palette(table["label"])
    fig, ax = _axes(ax, (6.4, 4.4))
    curves = _drop_zero_g(curves, ax)
    sns.lineplot(data=curves, x="tau", y="g", hue="label", palette=palette, ax=ax, linewidth=1.8)
    ax.set(yscale="log", xlabel="tau (accuracy tolerance)", xlim=(float(np.min(taus)), float(np.max(taus))),
           ylabel=f"{g_label(acc_unit, scale)} at MUI = {mui:.0e}", title=title)
    ax.legend(title=None, fontsize=8, frameon=False)
    _style(ax)
    return fig


def plot_winner_regions(table: pd.DataFrame, mui_min: float, mui_max: float, *, title: str,
                        tau: float = 2.0, acc_unit: str = "fraction", scale: float = 1.0,
                        relative: bool = True, n_points: int = 200, palette: dict | None = None,
                        ax=None) -> Figure:
    """Each MUI region shaded in the colour of the method with the highest G there; boundaries
    are the exact crossovers (``metric.winner_regions``), drawn dashed and labelled.

    ``relative`` (default) plots each G divided by the highest G at that MUI (1 = the winner; the
    convention cancels out), on a linear y axis; otherwise G itself on log-log axes.
    """
    palette = palette or method_palette(table["label"])
    regions = metric.winner_regions(table, mui_min, mui_max, tau)
    if relative:
        curves = metric.greeness_curves(table, np.geomspace(mui_min, mui_max, n_points), tau,
                                        acc_unit=acc_unit, scale=scale)
        curves["g"] = curves["g"] / curves.groupby("mui")["g"].transform("max")
        fig, ax = _axes(ax, (6.4, 4.4))
        sns.lineplot(data=curves, x="mui", y="g", hue="label", palette=palette, ax=ax, linewidth=1.8)
        ax.set(xscale="log", xlim=(mui_min, mui_max), xlabel="MUI (inferences per life cycle)",
               ylabel=f"G / highest G at that MUI (tau = {tau:g})", title=title)
        ax.legend(title=None, fontsize=8, frameon=False)
        _style(ax)
    else:
        fig = plot_g_vs_mui(table, mui_min, mui_max, title=title, tau=tau, acc_unit=acc_unit,
                            scale=scale, n_points=n_points, palette=palette, ax=ax)
        ax = ax or fig.axes[0]
    for _, r in regions.iterrows():
        ax.axvspan(r["mui_from"], r["mui_to"], color=palette[r["winner"]], alpha=0.13, lw=0)
    for edge in regions["mui_from"].iloc[1:]:
        ax.axvline(edge, color="0.3", linestyle="--", linewidth=0.8)
        ax.annotate(f"{edge:.3g}", (edge, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                    ha="right", va="bottom", fontsize=7, color="0.25")
    return fig


def plot_crossovers(table: pd.DataFrame, *, title: str, x: str = "pruner", by: str = "finetune_epochs",
                    by_label: str = "{} fine-tune epochs", markers: str = "osD^v<>", ax=None) -> Figure:
    """Each row's ``crossover_mui`` (the MUI above which it beats its base model) on a log y axis
    against ``x``, one marker per value of ``by``.

    A row without a crossover (NaN: it never beats its base) has no point; it is named in a note
    on the axes instead, and a ``by`` value with no crossover at all gets no legend entry.
    """
    fig, ax = _axes(ax, (6.4, 4.4))
    finite = table["crossover_mui"].astype(float).pipe(np.isfinite)
    ax.set(title=title, xlabel=x, ylabel="crossover MUI with the base model")
    names = list(dict.fromkeys(table[x].astype(str)))  # every x on the axis, with or without a point
    tilt = len(names) > 4  # long names side by side would overlap
    ax.set_xticks(range(len(names)), names, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlim(-0.5, len(names) - 0.5)
    style = {v: (markers[i % len(markers)], f"C{i}") for i, v in enumerate(sorted(table[by].dropna().unique()))}
    for value, part in table[finite].groupby(by, sort=True):  # each value keeps its marker and colour
        marker, colour = style[value]
        ax.scatter(part[x].astype(str).map(names.index), part["crossover_mui"], marker=marker, color=colour,
                   label=by_label.format(_fmt(value)))
    if finite.any():
        ax.set_yscale("log")
        ax.legend(frameon=False, fontsize=8)
    never = table[~finite]
    if len(never):
        missing = ", ".join(f"{r[x]} ({by_label.format(_fmt(r[by]))})" for _, r in never.iterrows())
        _note(ax, f"never beats its base (no crossover): {missing}", wrap=True)
    _style(ax)
    return fig


def _fmt(value) -> str:
    """A number as a label: 2.0 -> '2', 0.5 -> '0.5'."""
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def plot_power_series(series: dict[str, pd.DataFrame], means: pd.DataFrame, *, title: str,
                      reference_w: float | None = None, ax=None) -> Figure:
    """Power against time for several recordings of one window, each with its mean (Figure 5).

    ``series`` maps a label (``smi-0.1s``) to a tracer's samples; ``means`` is
    :func:`greenlib.sensitivity.window_means` (per label: the column drawn, the window's start and
    length on that tracer's clock, the time-weighted mean over the window). Time is drawn from the
    window's start, so every recording lines up; the window is shaded and each mean spans it only.
    The nvidia-smi recordings are drawn when present, else every series. ``reference_w``: the
    energy counter's mean power over the same window, drawn dashed. Every line is in the legend.
    """
    by_label = means.set_index("series")
    chosen = {k: v for k, v in series.items() if k.startswith("smi-")} or series
    palette = method_palette(list(chosen))
    fig, ax = _axes(ax, (9.0, 4.6))
    window_s = float(by_label.loc[list(chosen), "window_s"].max())
    ax.axvspan(0.0, window_s, color="0.93", zorder=0, label=f"training window ({window_s:.1f} s)")
    for label, df in chosen.items():
        m = by_label.loc[label]
        d = df[df["valid"].astype(bool)] if "valid" in df else df
        ax.plot(d["t_s"] - m["window_start_s"], d[m["column"]], lw=1.0, color=palette[label],
                label=f"{label}: {m['column']}")
        err = f", {m['rel_err_pct']:+.1f}% vs counter" if np.isfinite(m["rel_err_pct"]) else ""
        ax.hlines(m["mean_power_w"], 0.0, m["window_s"], color=palette[label], lw=1.4, ls=":",
                  label=f"{label}: mean over the window, time-weighted ({m['mean_power_w']:.1f} W{err})")
    if reference_w is not None and np.isfinite(reference_w):
        ax.hlines(reference_w, 0.0, window_s, color="0.1", lw=1.4, ls="--",
                  label=f"energy counter: mean over the window ({reference_w:.1f} W)")
    ax.set(xlabel="time since the training window began (s)", ylabel="power (W)", title=title)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _style(ax)
    return fig


BATCH_PANELS: tuple[tuple[str, str], ...] = (
    ("gpu_util_pct", "GPU utilisation (%)"), ("mem_util_pct", "memory utilisation (%)"),
    ("mean_power_w", "mean power (W)"), ("elapsed_s_per_epoch", "time per epoch (s)"),
    ("energy_wh_per_epoch", "energy per epoch (W·h)"))


def plot_batch_size_panels(summary: pd.DataFrame, *, title: str, hue: str = "pair",
                           panels: tuple[tuple[str, str], ...] = BATCH_PANELS) -> Figure:
    """The paper's Figure 4: one panel per GPU quantity against the batch size (log2 axis)."""
    fig, axes = subplots(len(panels), width=3.6, height=3.4)
    palette = method_palette(summary[hue].unique())
    for ax, (col, label) in zip(axes, panels):
        sns.lineplot(summary, x="batch_size", y=col, hue=hue, marker="o", palette=palette, ax=ax,
                     legend=ax is axes[0])
        ax.set_xscale("log", base=2)
        ax.set(xlabel="batch size", ylabel=label)
        ax.set_xticks(sorted(summary["batch_size"].unique()), [f"{b:g}" for b in sorted(summary["batch_size"].unique())])
        ax.tick_params(axis="x", labelrotation=45)
        _style(ax)
    if axes[0].get_legend():
        axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle(title)
    return fig


def plot_gpu_types(table: pd.DataFrame, *, title: str,
                   panels: tuple[tuple[str, str], ...] = (("elapsed_s", "time per epoch (s)"),
                                                          ("energy_wh", "energy per epoch (W·h)"),
                                                          ("avg_power_w", "mean power (W)"))) -> Figure:
    """The paper's Table 4 as bars: one bar per GPU (``gpu``), coloured by ``source`` (ours / paper)."""
    fig, axes = subplots(len(panels), width=4.2, height=3.8)
    palette = method_palette(table["source"].unique())
    for ax, (col, label) in zip(axes, panels):
        sns.barplot(table, y="gpu", x=col, hue="source", palette=palette, dodge=False, ax=ax,
                    legend=ax is axes[0])
        ax.set(xlabel=label, ylabel="")
        _style(ax)
    fig.suptitle(title)
    return fig


def plot_method_bars(runs: pd.DataFrame, order, *, title: str,
                     panels: tuple[tuple[str, str], ...] = (("acc_percent", "Acc (%)"), ("tec_wh", "TEC (W·h)"),
                                                            ("iec_wh", "IEC (W·h)"))) -> Figure:
    """Acc, TEC and IEC per method (``label``) from one row per run; error bars: SD over seeds."""
    d = runs.assign(acc_percent=100 * runs["acc"].astype(float))
    fig, axes = subplots(len(panels), width=4.4, height=0.5 * len(order) + 1.8)
    palette = method_palette(order)
    for ax, (col, label) in zip(axes, panels):
        sns.barplot(d, y="label", x=col, hue="label", order=order, hue_order=order, palette=palette,
                    errorbar="sd", legend=False, ax=ax)
        ax.set(xlabel=label, ylabel="")
        if col == "iec_wh":
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        _style(ax)
    fig.suptitle(title)
    return fig

"""greenlib.plotting: each function returns a Figure with the caller's title, draws into a given
axis, and saves through greenlib.io."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from greenlib import io, metric, paper, plotting


@pytest.fixture(scope="module")
def methods():
    return paper.select(paper.load_table3(), paper.FIGURE2_METHODS)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_g_vs_mui(methods, tmp_path):
    fig = plotting.plot_g_vs_mui(methods, 1e6, 1e11, title="CIFAR-100, P100, smoke", scale=1e4,
                                 mark_crossovers=True)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "CIFAR-100, P100, smoke"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.get_legend().get_texts()) == len(methods)
    png, pdf = io.save_figure(fig, "g_vs_mui", tmp_path)
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0


def test_g_vs_tau_into_a_panel(methods):
    fig, axes = plotting.subplots(2)
    out = plotting.plot_g_vs_tau(methods, np.linspace(1, 10, 19), mui=1e9, title="b", ax=axes[1])
    assert out is fig and axes[1].get_title() == "b" and axes[1].get_yscale() == "log"


def test_winner_regions_shades_each_region(methods):
    for relative in (True, False):
        fig = plotting.plot_winner_regions(methods, 1e6, 1e11, tau=5, acc_unit="percent",
                                           title="w", relative=relative)
        n_regions = len(metric.winner_regions(methods, 1e6, 1e11, 5))
        ax = fig.axes[0]
        assert len(ax.patches) >= n_regions  # one axvspan per region
        assert len(ax.texts) == n_regions - 1  # one label per boundary


def test_g_label_names_the_convention():
    assert plotting.g_label("fraction", 1e4, 2) == "G in 1/(W·h) (tau = 2; Acc as fraction; x 1e4)"
    assert plotting.g_label("percent") == "G in %^tau/(W·h) (Acc in %)"
    with pytest.raises(ValueError, match="acc_unit"):
        plotting.g_label("ratio")


def test_method_bars_draw_sd_error_bars_only_where_seeds_repeat():
    import pandas as pd

    runs = pd.DataFrame({"label": ["a", "a", "b"], "acc": [0.5, 0.7, 0.6], "tec_wh": [1.0, 3.0, 2.0],
                         "iec_wh": [1e-6, 1e-6, 2e-6]})
    fig = plotting.plot_method_bars(runs, ["a", "b"], title="t")
    acc_ax = fig.axes[0]
    bars = {round(p.get_width(), 6) for p in acc_ax.patches}
    assert bars == {60.0}  # both means are 60 %
    spans = [ln.get_xdata() for ln in acc_ax.lines if len(ln.get_xdata()) == 2]
    widths = sorted(w for w in (round(abs(x[1] - x[0]), 6) for x in spans) if np.isfinite(w))
    # one error bar: a's SD over its two seeds (0.5, 0.7 -> 14.142 % points each side); b has one run
    assert len(widths) == 1 and widths[0] == pytest.approx(2 * 14.142136, rel=1e-5)


@pytest.mark.parametrize("draw", [
    lambda t, ax: plotting.plot_g_vs_mui(t, 1e6, 1e11, title="t", ax=ax),
    lambda t, ax: plotting.plot_g_vs_tau(t, np.linspace(1, 5, 9), mui=1e9, title="t", ax=ax)])
def test_a_method_of_g_zero_is_named_in_a_note_not_an_empty_legend_entry(methods, draw):
    zero = methods.iloc[:1].assign(label="dead net", acc_percent=0.0)
    table = pd.concat([methods, zero], ignore_index=True)
    fig, axes = plotting.subplots(1)
    draw(table, axes[0])
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert "dead net" not in legend and len(legend) == len(methods)
    notes = [t.get_text() for t in axes[0].texts]
    assert any("dead net" in n and "G = 0" in n for n in notes)
    assert "W·h" in axes[0].get_ylabel()


def _crossovers(short: list[float], long: list[float]) -> pd.DataFrame:
    pruners = ["l1", "fpgm", "apoz"]
    return pd.DataFrame({"pruner": pruners * 2, "finetune_epochs": [1.0] * 3 + [2.0] * 3,
                         "crossover_mui": [*short, *long]})


def test_crossovers_one_marker_per_fine_tune_length(tmp_path):
    fig = plotting.plot_crossovers(_crossovers([4e3, 6e3, 6e3], [1e4, 5e3, 1e5]), title="x")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["l1", "fpgm", "apoz"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1 fine-tune epochs", "2 fine-tune epochs"]
    assert sorted(y for c in ax.collections for y in c.get_offsets()[:, 1]) == [4e3, 5e3, 6e3, 6e3, 1e4, 1e5]
    assert not ax.texts
    io.save_figure(fig, "crossovers", tmp_path)


def test_crossovers_a_length_that_never_beats_its_base_is_a_note_not_a_legend_entry(tmp_path):
    # one fine-tune length with no crossover at all made matplotlib's legend fail on save (CI, 02_pruning)
    fig = plotting.plot_crossovers(_crossovers([np.nan] * 3, [1e4, np.nan, 1e5]), title="x")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["2 fine-tune epochs"]
    assert [tuple(p) for c in ax.collections for p in c.get_offsets()] == [(0, 1e4), (2, 1e5)]  # l1, apoz
    # 2 epochs keep the second length's colour though the first has no point
    assert tuple(ax.collections[0].get_facecolor()[0]) == matplotlib.colors.to_rgba("C1")
    note, = [t.get_text() for t in ax.texts]
    assert "never beats its base" in note and "fpgm (2 fine-tune epochs)" in note and "l1 (1 fine-tune epochs)" in note
    png, pdf = io.save_figure(fig, "crossovers", tmp_path)
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0


def test_crossovers_none_at_all_draws_an_empty_linear_axis_with_the_note(tmp_path):
    fig = plotting.plot_crossovers(_crossovers([np.nan] * 3, [np.nan] * 3), title="x")
    ax = fig.axes[0]
    assert ax.get_legend() is None and ax.get_yscale() == "linear" and not ax.collections
    assert "apoz (2 fine-tune epochs)" in ax.texts[0].get_text()
    io.save_figure(fig, "crossovers", tmp_path)


def test_paired_palette_draws_one_curve_alike_in_a_measured_and_a_published_panel():
    measured = ["resnet56→resnet20", "vgg13→vgg8"]
    published = ["CRD VGG13→VGG8", "CRD ResNet56→ResNet20"]  # the other order, other names
    pal = plotting.paired_palette(measured, published, key=lambda x: x.lower().removeprefix("crd "))
    assert pal["vgg13→vgg8"] == pal["CRD VGG13→VGG8"]
    assert pal["resnet56→resnet20"] == pal["CRD ResNet56→ResNet20"]
    assert pal["vgg13→vgg8"] != pal["resnet56→resnet20"]
    # drawn: the two panels' lines of one pair share their colour
    t3 = paper.load_table3()
    rows = paper.select(t3, published)
    fig, (ax_m, ax_p) = plotting.subplots(2)
    plotting.plot_g_vs_mui(rows.assign(label=lambda d: d["label"].str.removeprefix("CRD ").str.lower()), 1e6, 1e11,
                           title="m", ax=ax_m, palette=pal)
    plotting.plot_g_vs_mui(rows, 1e6, 1e11, title="p", ax=ax_p, palette=pal)
    colour = {ax: {t.get_text(): h.get_color() for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().get_lines())}
              for ax in (ax_m, ax_p)}
    assert colour[ax_m]["vgg13→vgg8"] == colour[ax_p]["CRD VGG13→VGG8"]
    assert colour[ax_m]["resnet56→resnet20"] == colour[ax_p]["CRD ResNet56→ResNet20"]
    # without a key, every label is its own curve
    assert len(set(plotting.paired_palette(measured, published).values())) == 4

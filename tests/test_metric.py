"""greenlib.metric: Eq. 1 and 2, crossovers against root-finding, winners against a dense grid."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greenlib import metric

# VGG16 baseline, Table 3: TEC 138.59 W·h, Acc 73.37 %, IEC 8.93e-7 W·h; G(5e8) x 1e4 = 9.20.
VGG16 = dict(acc=0.7337, tec=138.59, iec=8.93e-7)


def random_methods(seed: int, n: int) -> pd.DataFrame:
    """Methods spread like the paper's: Acc 60-80 %, TEC 10-5000 W·h, IEC 1e-7-3e-6 W·h."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "label": [f"m{i}" for i in range(n)],
        "acc_percent": rng.uniform(60, 80, n),
        "tec_wh": 10 ** rng.uniform(1, 3.7, n),
        "iec_wh": 10 ** rng.uniform(-7, -5.5, n),
    })


def bisect_log(f, lo: float, hi: float, iters: int = 200) -> float:
    """Root of f on [lo, hi] (f(lo), f(hi) of opposite signs), bisecting in log space."""
    a, b = np.log(lo), np.log(hi)
    fa = f(np.exp(a))
    for _ in range(iters):
        mid = 0.5 * (a + b)
        fm = f(np.exp(mid))
        if np.sign(fm) == np.sign(fa):
            a, fa = mid, fm
        else:
            b = mid
    return float(np.exp(0.5 * (a + b)))


# --- Eq. 1 ----------------------------------------------------------------------------------

def test_greeness_matches_hand_computation():
    g = metric.greeness(**VGG16, mui=5e8)
    assert isinstance(g, float)
    assert g == pytest.approx(0.7337**2 / (5e8 * 8.93e-7 + 138.59), rel=1e-15)
    assert round(g * 1e4, 2) == 9.20


def test_mui_zero_is_accuracy_over_training_energy():
    assert metric.greeness(**VGG16, mui=0) == pytest.approx(0.7337**2 / 138.59)


def test_percent_is_fraction_times_100_to_the_tau():
    for tau in (2, 5, 10):
        frac = metric.greeness(**VGG16, mui=1e9, tau=tau)
        pct = metric.greeness(73.37, 138.59, 8.93e-7, 1e9, tau=tau, acc_unit="percent")
        assert pct == pytest.approx(frac * 100.0**tau, rel=1e-12)


def test_broadcasts_over_mui_and_tau():
    mui = np.geomspace(1e6, 1e11, 7)[:, None]
    tau = np.array([1.0, 2.0, 5.0, 10.0])[None, :]
    g = metric.greeness(**VGG16, mui=mui, tau=tau)
    assert g.shape == (7, 4)
    for i in range(7):
        for j in range(4):
            assert g[i, j] == pytest.approx(metric.greeness(**VGG16, mui=mui[i, 0], tau=tau[0, j]))


def test_broadcasts_over_methods():
    acc = np.array([0.7, 0.75])[:, None]
    g = metric.greeness(acc, np.array([100.0, 200.0])[:, None], 5e-7, np.array([[1e6, 1e9]]))
    assert g.shape == (2, 2)
    assert g[1, 0] == pytest.approx(0.75**2 / (1e6 * 5e-7 + 200.0))


def test_g_falls_with_mui_and_rises_with_accuracy():
    mui = np.geomspace(1e3, 1e12, 50)
    g = metric.greeness(**VGG16, mui=mui)
    assert np.all(np.diff(g) < 0)
    assert metric.greeness(0.8, 138.59, 8.93e-7, 1e9) > metric.greeness(0.7, 138.59, 8.93e-7, 1e9)


@pytest.mark.parametrize("kwargs, name, shown", [
    (dict(acc=1.5), "acc", "1.5"),
    (dict(acc=-0.1), "acc", "-0.1"),
    (dict(acc=101.0, acc_unit="percent"), "acc", "101.0"),
    (dict(acc=float("nan")), "acc", "nan"),
    (dict(acc="high"), "acc", "'high'"),
    (dict(tec=-1.0), "tec", "-1.0"),
    (dict(tec=float("inf")), "tec", "inf"),
    (dict(iec=-1e-9), "iec", "-1e-09"),
    (dict(mui=-5.0), "mui", "-5.0"),
    (dict(mui=np.array([1e6, np.nan, 1e8])), "mui", "nan"),
    (dict(mui=np.array([1e6, -1.0])), "mui", "-1.0"),
    (dict(tau=0.0), "tau", "0.0"),
    (dict(tau=-2.0), "tau", "-2.0"),
    (dict(acc_unit="percentage"), "acc_unit", "'percentage'"),
])
def test_invalid_input_raises_naming_argument_and_value(kwargs, name, shown):
    args = dict(**VGG16, mui=1e9)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        metric.greeness(**args)
    msg = str(err.value)
    assert msg.startswith(name), msg
    assert shown in msg, msg


def test_array_error_names_the_index():
    with pytest.raises(ValueError, match=r"mui holds -1.0 at index 2"):
        metric.greeness(**VGG16, mui=np.array([1.0, 2.0, -1.0]))


def test_zero_total_energy_raises():
    with pytest.raises(ValueError, match="mui \\* iec \\+ tec is 0"):
        metric.greeness(0.7, 0.0, 1e-7, 0.0)


# --- Eq. 2 ----------------------------------------------------------------------------------

def test_co2e_is_greeness_over_grams_per_wh():
    g = metric.greeness(**VGG16, mui=1e9)
    g_co2 = metric.greeness_co2e(**VGG16, mui=1e9, carbon_intensity=400.0)
    assert g_co2 == pytest.approx(g / 0.4, rel=1e-12)  # 400 g/kWh = 0.4 g/W·h


def test_co2e_scales_inversely_with_intensity_and_pue():
    base = metric.greeness_co2e(**VGG16, mui=1e9, carbon_intensity=200.0)
    assert metric.greeness_co2e(**VGG16, mui=1e9, carbon_intensity=400.0) == pytest.approx(base / 2)
    assert metric.greeness_co2e(**VGG16, mui=1e9, carbon_intensity=200.0, pue=1.5) == pytest.approx(base / 1.5)


def test_co2e_keeps_the_ranking_and_broadcasts():
    mui = np.geomspace(1e6, 1e11, 9)
    a = metric.greeness(0.70, 150.0, 5.6e-7, mui) > metric.greeness(0.78, 280.0, 6.5e-7, mui)
    b = (metric.greeness_co2e(0.70, 150.0, 5.6e-7, mui, "world_iea_2019")
         > metric.greeness_co2e(0.78, 280.0, 6.5e-7, mui, "world_iea_2019"))
    assert np.array_equal(a, b)


def test_named_intensities_have_sources_and_convert():
    assert metric.CARBON_INTENSITY
    for name, ci in metric.CARBON_INTENSITY.items():
        assert 0 < ci.g_per_kwh < 2000 and ci.source
        assert metric.carbon_g_per_wh(name) == pytest.approx(ci.g_per_kwh / 1000)
    assert metric.co2e_g(1000.0, 475.0) == pytest.approx(475.0)  # 1 kWh at 475 g/kWh
    assert metric.co2e_g(1000.0, 475.0, pue=metric.PUE["uptime_2020"]) == pytest.approx(475.0 * 1.59)


@pytest.mark.parametrize("kwargs, name", [
    (dict(carbon_intensity="mars"), "carbon_intensity"),
    (dict(carbon_intensity=0.0), "carbon_intensity"),
    (dict(carbon_intensity=float("nan")), "carbon_intensity"),
    (dict(carbon_intensity=400.0, pue=0.9), "pue"),
])
def test_co2e_invalid_input_raises(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        metric.greeness_co2e(**VGG16, mui=1e9, **kwargs)


# --- crossovers -----------------------------------------------------------------------------

def _g(row, mui, tau):
    return metric.greeness(row["acc_percent"], row["tec_wh"], row["iec_wh"], mui, tau, "percent")


@pytest.mark.parametrize("tau", [1.0, 2.0, 5.0, 10.0])
def test_crossover_matches_numeric_root(tau):
    t = random_methods(seed=int(tau), n=12)
    n_found = 0
    for i in range(len(t)):
        for j in range(i + 1, len(t)):
            a, b = t.iloc[i], t.iloc[j]
            m = metric.crossover_mui(a.acc_percent, a.tec_wh, a.iec_wh, b.acc_percent, b.tec_wh,
                                     b.iec_wh, tau, acc_unit="percent")
            f = lambda x: np.log(_g(a, x, tau)) - np.log(_g(b, x, tau))  # noqa: E731
            lo, hi = 1e-6, 1e25
            if np.isnan(m):
                assert np.sign(f(lo)) == np.sign(f(hi)), (i, j)  # no sign change: no crossing
            else:
                n_found += 1
                assert np.sign(f(m / 10)) != np.sign(f(m * 10))
                assert bisect_log(f, lo, hi) == pytest.approx(m, rel=1e-9)
    assert n_found > 5  # the draw does produce crossings


def test_crossover_is_symmetric_and_unit_free():
    a, b = (0.7059, 154.27, 5.61e-7), (0.7761, 280.78, 6.48e-7)  # APoZ, ProxylessNAS (Table 3)
    m = metric.crossover_mui(*a, *b)
    assert m == pytest.approx(metric.crossover_mui(*b, *a), rel=1e-12)
    pct = metric.crossover_mui(70.59, 154.27, 5.61e-7, 77.61, 280.78, 6.48e-7, acc_unit="percent")
    assert pct == pytest.approx(m, rel=1e-12)


def test_crossover_nan_where_they_never_cross():
    same = (0.7, 100.0, 5e-7)
    assert np.isnan(metric.crossover_mui(*same, *same))
    # better in every respect: dominates at every MUI
    assert np.isnan(metric.crossover_mui(0.75, 100.0, 4e-7, 0.70, 150.0, 5e-7))
    # same accuracy and IEC, different TEC: parallel in the limit, never equal
    assert np.isnan(metric.crossover_mui(0.7, 100.0, 5e-7, 0.7, 150.0, 5e-7))


def test_crossover_broadcasts_and_survives_large_tau():
    m = metric.crossover_mui(0.7059, 154.27, 5.61e-7, 0.7761, 280.78, 6.48e-7, tau=np.array([2.0, 5.0, 10.0]))
    assert m.shape == (3,)
    big = metric.crossover_mui(70.59, 154.27, 5.61e-7, 77.61, 280.78, 6.48e-7, tau=300.0, acc_unit="percent")
    assert np.isnan(big) or big > 0  # no overflow to inf/inf


def test_crossover_invalid_input_names_argument():
    with pytest.raises(ValueError, match="^acc_b"):
        metric.crossover_mui(0.7, 100.0, 5e-7, 1.2, 150.0, 5e-7)
    with pytest.raises(ValueError, match="^iec_a"):
        metric.crossover_mui(0.7, 100.0, -5e-7, 0.8, 150.0, 5e-7)
    with pytest.raises(ValueError, match="^tau"):
        metric.crossover_mui(0.7, 100.0, 5e-7, 0.8, 150.0, 5e-7, tau=0)


def test_crossover_tau_matches_numeric_root():
    a, b = (70.59, 154.27, 5.61e-7), (77.61, 280.78, 6.48e-7)
    t = metric.crossover_tau(*a, *b, mui=1e9, acc_unit="percent")
    ga = lambda tau: metric.greeness(*a, 1e9, tau, "percent")  # noqa: E731
    gb = lambda tau: metric.greeness(*b, 1e9, tau, "percent")  # noqa: E731
    root = bisect_log(lambda tau: np.log(ga(tau)) - np.log(gb(tau)), 0.01, 100.0)
    assert t == pytest.approx(root, rel=1e-9)
    assert np.isnan(metric.crossover_tau(*a, *a, mui=1e9, acc_unit="percent"))


# --- tables of methods ----------------------------------------------------------------------

@pytest.mark.parametrize("seed, tau", [(0, 2.0), (1, 2.0), (2, 5.0), (3, 10.0), (4, 1.0)])
def test_winner_regions_agree_with_dense_grid_argmax(seed, tau):
    t = random_methods(seed, n=8)
    lo, hi = 1e5, 1e12
    regions = metric.winner_regions(t, lo, hi, tau)
    # regions tile [lo, hi] in order, and no two neighbours share a winner
    assert regions["mui_from"].iloc[0] == lo and regions["mui_to"].iloc[-1] == hi
    assert np.array_equal(regions["mui_to"].to_numpy()[:-1], regions["mui_from"].to_numpy()[1:])
    assert (regions["winner"].to_numpy()[1:] != regions["winner"].to_numpy()[:-1]).all()
    # every boundary is a pairwise crossover, exactly
    cross = metric.pairwise_crossovers(t, tau)["mui"].to_numpy()
    for edge in regions["mui_from"].iloc[1:]:
        assert np.isclose(cross, edge, rtol=1e-14, atol=0).any()
    # a dense grid's argmax agrees away from the boundaries
    grid = np.geomspace(lo, hi, 20_001)
    curves = metric.greeness_curves(t, grid, tau, acc_unit="percent")
    g = curves.pivot(index="mui", columns="label", values="g")[t["label"]]
    grid_winner = g.columns.to_numpy()[np.argmax(g.to_numpy(), axis=1)]
    idx = np.searchsorted(regions["mui_to"].to_numpy(), grid, side="left")
    region_winner = regions["winner"].to_numpy()[np.minimum(idx, len(regions) - 1)]
    edges = regions["mui_from"].to_numpy()[1:]
    far = np.all(np.abs(np.log(grid[:, None] / edges[None, :])) > 1e-6, axis=1) if len(edges) else np.ones_like(grid, bool)
    assert np.array_equal(grid_winner[far], region_winner[far])


def test_winner_regions_single_method_and_no_crossing():
    t = random_methods(0, 1)
    r = metric.winner_regions(t, 1e6, 1e9)
    assert r.to_dict("records") == [{"winner": "m0", "mui_from": 1e6, "mui_to": 1e9}]


@pytest.mark.parametrize("lo, hi, match", [
    (1e9, 1e6, "mui_max"), (0.0, 1e6, "mui_min"), (1e6, float("nan"), "mui_max"),
])
def test_winner_regions_bad_range_raises(lo, hi, match):
    with pytest.raises(ValueError, match=f"^{match}"):
        metric.winner_regions(random_methods(0, 3), lo, hi)


def test_table_functions_check_their_table():
    t = random_methods(0, 3)
    with pytest.raises(ValueError, match="lacks columns"):
        metric.winner_regions(t.drop(columns="iec_wh"), 1e6, 1e9)
    with pytest.raises(ValueError, match="duplicate"):
        metric.winner_regions(t.assign(label=["a", "a", "b"]), 1e6, 1e9)
    with pytest.raises(ValueError, match="^acc_percent"):
        metric.winner_regions(t.assign(acc_percent=[50.0, 120.0, 70.0]), 1e6, 1e9)


def test_greeness_curves_is_tidy_and_matches_greeness():
    t = random_methods(0, 3)
    c = metric.greeness_curves(t, [1e6, 1e9], [2.0, 5.0], acc_unit="fraction", scale=1e4)
    assert list(c.columns) == ["label", "mui", "tau", "g"] and len(c) == 3 * 2 * 2
    row = c[(c.label == "m1") & (c.mui == 1e9) & (c.tau == 5.0)]["g"].item()
    m1 = t.iloc[1]
    assert row == pytest.approx(1e4 * metric.greeness(m1.acc_percent / 100, m1.tec_wh, m1.iec_wh, 1e9, 5.0))


def test_pairwise_crossovers_name_who_leads_on_each_side():
    t = random_methods(2, 5)
    for r in metric.pairwise_crossovers(t, 2.0).itertuples():
        a, b = t.set_index("label").loc[r.a], t.set_index("label").loc[r.b]
        probe = r.mui / 3 if np.isfinite(r.mui) else 1e7
        assert r.below == (r.a if _g(a, probe, 2.0) > _g(b, probe, 2.0) else r.b)
        if np.isfinite(r.mui):
            assert r.above != r.below


def test_leads_until_agrees_with_grid():
    t = random_methods(5, 6)
    grid = np.geomspace(1e2, 1e14, 4001)
    g = {row["label"]: _g(row, grid, 2.0) for _, row in t.iterrows()}
    for leader in t["label"]:
        others = [x for x in t["label"] if x != leader]
        bound = metric.leads_until(t, leader, others)
        wins = np.all([g[leader] > g[o] for o in others], axis=0)
        if bound == 0:
            assert not wins[0]
        else:
            below = grid < bound * (1 - 1e-9)
            assert wins[below].all()
            if np.isfinite(bound) and bound < grid[-1]:
                assert not wins[grid > bound * (1 + 1e-9)].all()
    with pytest.raises(ValueError, match="not in the table"):
        metric.leads_until(t, "nope", ["m1"])

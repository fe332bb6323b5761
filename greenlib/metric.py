"""The Greeness metric (the paper's Eq. 1 and 2), where two methods cross, and who wins where.

Eq. 1::

    G(MUI) = Acc**tau / (MUI * IEC + TEC)

with TEC (training energy of the whole training phase) and IEC (energy of one inference) in W·h,
MUI the number of inferences in one life cycle and tau > 0 the tolerance to accuracy loss. Acc is
a fraction in [0, 1] (``acc_unit="fraction"``, the paper's Section 3.2 and Table 3) or a
percentage in [0, 100] (``acc_unit="percent"``, the paper's Table 5). Eq. 2 divides the
denominator's energy by a carbon intensity (and a data-centre PUE) to count gCO2e instead of W·h.

Every function here is pure and numpy-vectorised: arguments broadcast against each other, so a
column of MUIs against a row of taus gives a (n_mui, n_tau) grid. Scalars in give a float out.

Whether method A beats method B does not depend on the accuracy unit nor on any constant scale
of G (Table 3 prints G x 1e4), so crossovers and winners take no ``acc_unit``. The table functions
read a DataFrame with one row per method and the columns ``label``, ``acc_percent`` (0-100),
``tec_wh`` and ``iec_wh`` (the names ``greenlib.paper`` loads and the results store writes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

ACC_UNITS: dict[str, float] = {"fraction": 1.0, "percent": 100.0}
"""Accepted ``acc_unit`` values and the largest accuracy each allows."""

# Column names the table functions read (one row per method).
LABEL_COL, ACC_COL, TEC_COL, IEC_COL = "label", "acc_percent", "tec_wh", "iec_wh"


# --- validation -----------------------------------------------------------------------------

def _as_array(name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number or an array of numbers") from None
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name}{_where(arr, bad)} is {'NaN' if np.isnan(arr[bad]).any() else 'not finite'};"
                         f" give finite numbers")
    return arr


def _where(arr: np.ndarray, bad: np.ndarray) -> str:
    """``=value`` for a scalar, `` holds value at index i`` for an array (the first bad one)."""
    if arr.ndim == 0:
        return f"={arr.item()!r}"
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    idx_text = idx[0] if len(idx) == 1 else idx
    return f" holds {arr[idx].item()!r} at index {idx_text}"


def _check_min(name: str, arr: np.ndarray, low: float, inclusive: bool, what: str) -> None:
    bad = arr < low if inclusive else arr <= low
    if bad.any():
        op = ">=" if inclusive else ">"
        raise ValueError(f"{name}{_where(arr, bad)} is out of range: {what} must be {op} {low:g}")


def check_acc_unit(acc_unit: str) -> float:
    """The largest accuracy ``acc_unit`` allows; ValueError naming it if it is unknown."""
    if acc_unit not in ACC_UNITS:
        raise ValueError(f"acc_unit={acc_unit!r} is unknown; accepted: {', '.join(ACC_UNITS)}")
    return ACC_UNITS[acc_unit]


def _check_acc(name: str, acc, acc_unit: str) -> np.ndarray:
    top = check_acc_unit(acc_unit)
    arr = _as_array(name, acc)
    bad = (arr < 0) | (arr > top)
    if bad.any():
        raise ValueError(f"{name}{_where(arr, bad)} is outside [0, {top:g}] for acc_unit={acc_unit!r}")
    return arr


def _check_energy(name: str, value) -> np.ndarray:
    arr = _as_array(name, value)
    _check_min(name, arr, 0.0, True, "energy in W·h")
    return arr


def _check_mui(name: str, value) -> np.ndarray:
    arr = _as_array(name, value)
    _check_min(name, arr, 0.0, True, "the model usage intensity")
    return arr


def _check_tau(name: str, value) -> np.ndarray:
    arr = _as_array(name, value)
    _check_min(name, arr, 0.0, False, "the accuracy tolerance")
    return arr


def _out(arr: np.ndarray):
    return arr.item() if np.ndim(arr) == 0 else arr


# --- Eq. 1 and Eq. 2 ------------------------------------------------------------------------

def greeness(acc, tec, iec, mui, tau=2.0, acc_unit: str = "fraction"):
    """Eq. 1: ``acc**tau / (mui * iec + tec)``, broadcast over all arguments.

    acc: accuracy, a fraction in [0, 1] or, with ``acc_unit="percent"``, in [0, 100].
    tec: training energy cost of the whole training phase, W·h (>= 0).
    iec: energy of one inference, W·h (>= 0).
    mui: model usage intensity, inferences per life cycle (>= 0).
    tau: accuracy tolerance (> 0).

    Returns G in acc_unit**tau per W·h (a float for scalar inputs, else an ndarray).
    Raises ValueError naming the argument and value for NaN/inf, an accuracy outside its unit's
    range, a negative energy or MUI, tau <= 0, an unknown ``acc_unit``, or a zero denominator.
    """
    acc_a = _check_acc("acc", acc, acc_unit)
    tec_a, iec_a = _check_energy("tec", tec), _check_energy("iec", iec)
    mui_a, tau_a = _check_mui("mui", mui), _check_tau("tau", tau)
    energy_wh = mui_a * iec_a + tec_a
    if (energy_wh == 0).any():
        raise ValueError("mui * iec + tec is 0 W·h (tec=0 and mui * iec=0): G is undefined")
    return _out(acc_a ** tau_a / energy_wh)


@dataclass(frozen=True)
class CarbonIntensity:
    """A published grid carbon intensity, gCO2e per kWh of electricity, and where it comes from."""

    g_per_kwh: float
    source: str


CARBON_INTENSITY: dict[str, CarbonIntensity] = {
    "world_iea_2019": CarbonIntensity(
        475.0, "IEA, Global Energy & CO2 Status Report 2019: world-average CO2 intensity of "
               "electricity generation (the value carbontracker uses as its world default)"),
    "world_ember_2021": CarbonIntensity(
        490.4, "Ember and Energy Institute, 'Carbon intensity of electricity generation', "
               "world, 2021 (life-cycle gCO2e/kWh), via Our World in Data"),
    "us_epa_strubell_2019": CarbonIntensity(
        432.7, "0.954 lb CO2e/kWh, the U.S. EPA average that Strubell et al. (ACL 2019), the "
               "paper's ref. [40], use; 0.954 x 453.59237 g"),
}
"""A few published grid averages for Eq. 2's constant C; pass a number for any other grid."""

PUE: dict[str, float] = {
    "none": 1.0,  # count the GPU energy only, as the paper does
    "uptime_2020": 1.59,  # Uptime Institute 2020 Annual Data Center Survey, industry average
}
"""Power usage effectiveness: facility energy / IT energy (>= 1)."""


def carbon_g_per_wh(carbon_intensity: float | str, pue: float = 1.0) -> float:
    """Eq. 2's C in gCO2e per W·h: a carbon intensity (gCO2e/kWh, or a name in
    :data:`CARBON_INTENSITY`) times the PUE, divided by 1000 W·h/kWh.

    Raises ValueError for an unknown name, a non-positive or non-finite intensity, or pue < 1.
    """
    if isinstance(carbon_intensity, str):
        if carbon_intensity not in CARBON_INTENSITY:
            raise ValueError(f"carbon_intensity={carbon_intensity!r} is unknown; accepted: "
                             f"{', '.join(CARBON_INTENSITY)} or a number in gCO2e/kWh")
        g_per_kwh = CARBON_INTENSITY[carbon_intensity].g_per_kwh
    else:
        g_per_kwh = float(_as_array("carbon_intensity", carbon_intensity))
        _check_min("carbon_intensity", np.asarray(g_per_kwh), 0.0, False, "gCO2e/kWh")
    pue_a = _as_array("pue", pue)
    _check_min("pue", pue_a, 1.0, True, "facility energy / IT energy")
    return g_per_kwh * float(pue_a) / 1000.0


def co2e_g(energy_wh, carbon_intensity: float | str, pue: float = 1.0):
    """Grams of CO2e emitted for ``energy_wh`` W·h of (IT) energy at that intensity and PUE."""
    return _out(_check_energy("energy_wh", energy_wh) * carbon_g_per_wh(carbon_intensity, pue))


def greeness_co2e(acc, tec, iec, mui, carbon_intensity: float | str, tau=2.0, pue: float = 1.0,
                  acc_unit: str = "fraction"):
    """Eq. 2: ``acc**tau / (mui * C * iec + C * tec)`` with C from :func:`carbon_g_per_wh`.

    Same arguments and checks as :func:`greeness`, plus ``carbon_intensity`` (gCO2e/kWh or a
    name in :data:`CARBON_INTENSITY`) and ``pue`` (>= 1). Returns G in acc_unit**tau per gCO2e,
    i.e. ``greeness(...) / C``: the ranking of methods is the same as with Eq. 1.
    """
    c = carbon_g_per_wh(carbon_intensity, pue)
    return _out(np.asarray(greeness(acc, tec, iec, mui, tau, acc_unit)) / c)


# --- crossovers -----------------------------------------------------------------------------

def _acc_powers(acc_a, acc_b, tau):
    """(acc_a/m)**tau and (acc_b/m)**tau with m = max(acc_a, acc_b): no overflow for big tau."""
    top = np.maximum(acc_a, acc_b)
    safe = np.where(top > 0, top, 1.0)
    return (acc_a / safe) ** tau, (acc_b / safe) ** tau


def crossover_mui(acc_a, tec_a, iec_a, acc_b, tec_b, iec_b, tau=2.0, acc_unit: str = "fraction"):
    """The MUI > 0 at which methods a and b have equal G (Eq. 1), in closed form; NaN if none.

    ``A (m Ib + Tb) = B (m Ia + Ta)`` with ``A = acc_a**tau``, ``B = acc_b**tau`` gives
    ``m = (B Ta - A Tb) / (A Ib - B Ia)``. G_a - G_b changes sign there (it is a line in m over
    positive denominators), so a positive finite m is a true crossing; otherwise (m <= 0, or
    parallel, or identical methods) the two never cross for MUI > 0 and the result is NaN.
    Units: tec and iec in W·h; ``acc_unit`` only sets the accepted accuracy range.
    """
    a_acc, b_acc = _check_acc("acc_a", acc_a, acc_unit), _check_acc("acc_b", acc_b, acc_unit)
    ta, ia = _check_energy("tec_a", tec_a), _check_energy("iec_a", iec_a)
    tb, ib = _check_energy("tec_b", tec_b), _check_energy("iec_b", iec_b)
    tau_a = _check_tau("tau", tau)
    big_a, big_b = _acc_powers(a_acc, b_acc, tau_a)
    num = big_b * ta - big_a * tb
    den = big_a * ib - big_b * ia
    with np.errstate(divide="ignore", invalid="ignore"):
        m = num / den
    m = np.where(np.isfinite(m) & (m > 0), m, np.nan)
    return _out(m)


def crossover_tau(acc_a, tec_a, iec_a, acc_b, tec_b, iec_b, mui, acc_unit: str = "fraction"):
    """The tau > 0 at which methods a and b have equal G at a fixed MUI; NaN if none.

    ``(acc_a/acc_b)**tau = D_a/D_b`` with ``D = mui*iec + tec`` gives
    ``tau = ln(D_a/D_b) / ln(acc_a/acc_b)``. NaN where the accuracies are equal or zero, or the
    root is not positive. For tau above it the more accurate method has the higher G.
    """
    a_acc, b_acc = _check_acc("acc_a", acc_a, acc_unit), _check_acc("acc_b", acc_b, acc_unit)
    ta, ia = _check_energy("tec_a", tec_a), _check_energy("iec_a", iec_a)
    tb, ib = _check_energy("tec_b", tec_b), _check_energy("iec_b", iec_b)
    m = _check_mui("mui", mui)
    da, db = m * ia + ta, m * ib + tb
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.log(da / db) / np.log(a_acc / b_acc)
    t = np.where(np.isfinite(t) & (t > 0), t, np.nan)
    return _out(t)


# --- tables of methods ----------------------------------------------------------------------

def _methods(table: pd.DataFrame, label: str = LABEL_COL) -> pd.DataFrame:
    """The table's label/acc/tec/iec columns, checked: present, labels unique, values valid."""
    missing = [c for c in (label, ACC_COL, TEC_COL, IEC_COL) if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}; it needs {label!r}, {ACC_COL!r}, "
                         f"{TEC_COL!r}, {IEC_COL!r} (one row per method)")
    if table.empty:
        raise ValueError("table has no rows; give at least one method")
    dup = table[label][table[label].duplicated()].tolist()
    if dup:
        raise ValueError(f"table has duplicate {label!r} values {dup}; labels must be unique")
    out = table[[label, ACC_COL, TEC_COL, IEC_COL]].reset_index(drop=True)
    _check_acc(ACC_COL, out[ACC_COL].to_numpy(), "percent")
    _check_energy(TEC_COL, out[TEC_COL].to_numpy())
    _check_energy(IEC_COL, out[IEC_COL].to_numpy())
    return out


def greeness_curves(table: pd.DataFrame, mui, tau=2.0, *, acc_unit: str = "fraction",
                    scale: float = 1.0, label: str = LABEL_COL) -> pd.DataFrame:
    """G of every method of ``table`` at every (mui, tau), tidy: columns label, mui, tau, g.

    ``table`` holds accuracy in percent (``acc_percent``); ``acc_unit`` picks the convention G
    is computed in (Table 3: "fraction" with ``scale=1e4``; Table 5: "percent", scale 1).
    """
    t = _methods(table, label)
    acc = t[ACC_COL].to_numpy() / (100.0 / check_acc_unit(acc_unit))
    mui_v = np.atleast_1d(_check_mui("mui", mui)).ravel()
    tau_v = np.atleast_1d(_check_tau("tau", tau)).ravel()
    # axes: method, mui, tau
    g = greeness(acc[:, None, None], t[TEC_COL].to_numpy()[:, None, None],
                 t[IEC_COL].to_numpy()[:, None, None], mui_v[None, :, None], tau_v[None, None, :],
                 acc_unit=acc_unit) * scale
    n, k, j = np.asarray(g).shape
    return pd.DataFrame({
        "label": np.repeat(t[label].to_numpy(), k * j),
        "mui": np.tile(np.repeat(mui_v, j), n),
        "tau": np.tile(tau_v, n * k),
        "g": np.asarray(g).ravel(),
    })


def pairwise_crossovers(table: pd.DataFrame, tau: float = 2.0, *,
                        label: str = LABEL_COL) -> pd.DataFrame:
    """Every pair (a, b) of methods with their crossover MUI (NaN if they never cross), and
    which of the two has the higher G below and above it: columns a, b, mui, below, above."""
    t = _methods(table, label)
    rows = []
    for i in range(len(t)):
        for j in range(i + 1, len(t)):
            a, b = t.iloc[i], t.iloc[j]
            m = crossover_mui(a[ACC_COL], a[TEC_COL], a[IEC_COL], b[ACC_COL], b[TEC_COL],
                              b[IEC_COL], tau, acc_unit="percent")
            below = _leader(a, b, m / 2 if np.isfinite(m) else 1.0, tau, label)
            above = _leader(a, b, m * 2, tau, label) if np.isfinite(m) else below
            rows.append({"a": a[label], "b": b[label], "mui": m, "below": below, "above": above})
    return pd.DataFrame(rows, columns=["a", "b", "mui", "below", "above"]).astype({"mui": float})


def _g_row(row: pd.Series, mui, tau) -> float:
    return greeness(row[ACC_COL], row[TEC_COL], row[IEC_COL], mui, tau, acc_unit="percent")


def _leader(a: pd.Series, b: pd.Series, mui: float, tau: float, label: str) -> str | None:
    ga, gb = _g_row(a, mui, tau), _g_row(b, mui, tau)
    return a[label] if ga > gb else b[label] if gb > ga else None


def winner_regions(table: pd.DataFrame, mui_min: float, mui_max: float, tau: float = 2.0, *,
                   label: str = LABEL_COL) -> pd.DataFrame:
    """Which method has the highest G on each stretch of [mui_min, mui_max], exactly.

    The boundaries are the pairwise crossovers (closed form) inside the range, not grid points:
    between two consecutive crossovers no two curves cross, so the winner there is the argmax at
    any interior MUI. Adjacent stretches with the same winner are merged. Exact ties go to the
    earlier row of ``table``. Returns columns winner, mui_from, mui_to (ascending, covering the
    range); raises ValueError unless 0 < mui_min < mui_max.
    """
    t = _methods(table, label)
    lo, hi = float(_as_array("mui_min", mui_min)), float(_as_array("mui_max", mui_max))
    _check_min("mui_min", np.asarray(lo), 0.0, False, "the smallest MUI")
    if not hi > lo:
        raise ValueError(f"mui_max={hi!r} must be > mui_min={lo!r}")
    tau = float(_check_tau("tau", tau))
    cross = pairwise_crossovers(t, tau, label=label)["mui"].to_numpy(dtype=float)
    inside = np.unique(cross[np.isfinite(cross) & (cross > lo) & (cross < hi)])
    edges = np.concatenate([[lo], inside, [hi]])
    mids = np.sqrt(edges[:-1] * edges[1:])  # geometric midpoints: MUI spans decades
    g = greeness(t[ACC_COL].to_numpy()[:, None], t[TEC_COL].to_numpy()[:, None],
                 t[IEC_COL].to_numpy()[:, None], mids[None, :], tau, acc_unit="percent")
    winners = t[label].to_numpy()[np.argmax(g, axis=0)]
    rows: list[dict] = []
    for w, a, b in zip(winners, edges[:-1], edges[1:]):
        if rows and rows[-1]["winner"] == w:
            rows[-1]["mui_to"] = b
        else:
            rows.append({"winner": w, "mui_from": a, "mui_to": b})
    return pd.DataFrame(rows, columns=["winner", "mui_from", "mui_to"])


def leads_until(table: pd.DataFrame, leader: str, others: Iterable[str], tau: float = 2.0, *,
                label: str = LABEL_COL) -> float:
    """The largest MUI such that ``leader`` has a higher G than each of ``others`` on all of
    (0, MUI): the smallest crossover with a method it beats near MUI = 0. Returns 0.0 if some
    other method is at least as good just above 0, ``inf`` if the leader is never overtaken.
    Raises ValueError for a label not in the table."""
    t = _methods(table, label).set_index(label, drop=False)
    others = list(others)
    unknown = [x for x in [leader, *others] if x not in t.index]
    if unknown:
        raise ValueError(f"labels {unknown} are not in the table; known: {', '.join(t.index)}")
    lead = t.loc[leader]
    bound = np.inf
    for name in others:
        o = t.loc[name]
        m = crossover_mui(lead[ACC_COL], lead[TEC_COL], lead[IEC_COL], o[ACC_COL], o[TEC_COL],
                          o[IEC_COL], tau, acc_unit="percent")
        probe = m / 2 if np.isfinite(m) else 1.0  # no crossing below m: any point there decides
        if _leader(lead, o, probe, tau, label) != leader:
            return 0.0
        bound = min(bound, m if np.isfinite(m) else np.inf)
    return float(bound)

"""The paper's published numbers (``data/paper/``), its two G conventions and its claims.

Tables load as DataFrames with one row per method and the columns :mod:`greenlib.metric` reads
(``label``, ``acc_percent``, ``tec_wh``, ``iec_wh``), plus every printed G in a column named for
its MUI and tau (``g_mui5e8_tau2_x1e4``). ``label`` is derived here (e.g. ``APoZ VGG16``,
``CRD VGG13→VGG8``, ``ProxylessNAS (CIFAR100)``, ``VGG16 baseline``) and unique per table.

The two conventions (same Eq. 1, TEC and IEC in W·h):
- :data:`TABLE3`: Acc as a fraction in [0, 1], G multiplied by 1e4, printed with 2 decimals.
- :data:`TABLE5`: Acc in percent (0-100), G unscaled, printed with 3 significant figures.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from greenlib import metric, paths

# --- conventions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GConvention:
    """How a table prints G: the accuracy unit, a constant factor, and the printed precision."""

    name: str
    acc_unit: str  # "fraction" or "percent" (metric.ACC_UNITS)
    scale: float  # printed G = scale * Eq. 1
    decimals: int | None = None  # printed with this many decimals ...
    sig_figs: int | None = None  # ... or this many significant figures

    def as_printed(self, g) -> np.ndarray:
        """``g`` rounded the way the table prints it (as floats)."""
        fmt = f"{{:.{self.decimals}f}}" if self.decimals is not None else f"{{:.{self.sig_figs - 1}e}}"
        return np.array([float(fmt.format(x)) for x in np.ravel(g)]).reshape(np.shape(g))

    def half_unit(self, printed) -> np.ndarray:
        """Half a unit in the last printed digit of each printed G."""
        printed = np.asarray(printed, dtype=float)
        if self.decimals is not None:
            return np.full(printed.shape, 0.5 * 10.0 ** -self.decimals)
        exp = np.floor(np.log10(np.abs(printed)))
        return 0.5 * 10.0 ** (exp - (self.sig_figs - 1))

    def describe(self) -> str:
        acc = "Acc as a fraction in [0, 1]" if self.acc_unit == "fraction" else "Acc in percent (0-100)"
        scale = f", G x {self.scale:.0e}" if self.scale != 1 else ", G unscaled"
        digits = f"{self.decimals} decimals" if self.decimals is not None else f"{self.sig_figs} significant figures"
        return f"{self.name}: {acc}{scale}, printed with {digits}"


TABLE3 = GConvention("Table 3 (tau = 2)", acc_unit="fraction", scale=1e4, decimals=2)
TABLE5 = GConvention("Table 5 (tau = 5, 10)", acc_unit="percent", scale=1.0, sig_figs=3)
INPUT_DECIMALS = 2  # TEC (W·h) and Acc (%) are printed with 2 decimals in Tables 3 and 5

HARDWARE = "training on Tesla P100, inference on TITAN V"  # Section 4.1
DATASET = "CIFAR-100"

# --- loaders --------------------------------------------------------------------------------

_TEXT_COLS = ("family", "model", "teacher", "student", "method", "search_dataset", "dataset")


def _read(name: str) -> pd.DataFrame:
    path = paths.paper_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; data/paper/ holds the transcribed tables")
    df = pd.read_csv(path, keep_default_na=False, na_values=["N/A"])
    for col in _TEXT_COLS:
        if col in df.columns:
            df[col] = df[col].astype(str)
    return df


def method_label(row: pd.Series) -> str:
    """The short, unique name a method goes by in figures and in :mod:`greenlib.metric`."""
    family, model, method = row["family"], row["model"], row["method"]
    if family == "Baseline":
        return f"{model} baseline"
    if family == "Distillation":
        return f"{method} {row['teacher']}→{row['student']}"
    if family == "NAS":
        return f"{method} ({row['search_dataset']})"
    if family == "Pruning":
        return f"{method.removesuffix(' Pruner')} {model}"
    return f"{method} {model}"


def _methods_table(name: str) -> pd.DataFrame:
    df = _read(name)
    df.insert(0, "label", df.apply(method_label, axis=1))
    if df["label"].duplicated().any():
        raise ValueError(f"{name}: duplicate labels {df['label'][df['label'].duplicated()].tolist()}")
    return df


def load_table3() -> pd.DataFrame:
    """Table 3 (p. 6): TEC, Acc, IEC (3 significant figures) and G at MUI 5e8 and 1e9, tau 2."""
    return _methods_table("table3.csv")


def load_table5() -> pd.DataFrame:
    """Table 5 (Appendix A): Table 3's runs plus two pruners, IEC with more digits, and G at
    MUI 5e8 with tau 5 and 10."""
    return _methods_table("table5.csv")


def load_table4() -> pd.DataFrame:
    """Table 4 (p. 9): KD (Wide ResNet 40-2 -> ResNet 16-2) on three GPU types."""
    return _read("table4.csv")


def load_crd() -> pd.DataFrame:
    """The CRD paper's CIFAR-100 top-1 (%) per (teacher, student, method); N/A as NaN."""
    return _read("crd_cifar100_top1.csv")


def select(table: pd.DataFrame, labels) -> pd.DataFrame:
    """The rows of ``table`` with these labels, in this order; ValueError naming unknown ones."""
    labels = list(labels)
    unknown = [x for x in labels if x not in set(table["label"])]
    if unknown:
        raise ValueError(f"labels {unknown} are not in the table; known: {', '.join(table['label'])}")
    return table.set_index("label").loc[labels].reset_index()


def with_precise_iec(table3: pd.DataFrame, table5: pd.DataFrame) -> pd.DataFrame:
    """Table 3 with each IEC replaced by the same run's IEC from Table 5 (more digits)."""
    iec = table5.set_index("label")["iec_wh"]
    missing = sorted(set(table3["label"]) - set(iec.index))
    if missing:
        raise ValueError(f"Table 5 has no rows for {missing}")
    out = table3.copy()
    out["iec_wh"] = out["label"].map(iec)
    return out


# --- printed G ------------------------------------------------------------------------------

_G_COL = re.compile(r"^g_mui(?P<mui>\d+(?:\.\d+)?e\d+)_tau(?P<tau>\d+(?:\.\d+)?)(?:_x(?P<scale>1e\d+))?$")


@dataclass(frozen=True)
class PrintedG:
    column: str
    mui: float
    tau: float
    scale: float


def printed_g_columns(table: pd.DataFrame) -> list[PrintedG]:
    """The printed-G columns of a table, with the MUI, tau and scale their names carry."""
    out = []
    for col in table.columns:
        m = _G_COL.match(col)
        if m:
            out.append(PrintedG(col, float(m["mui"]), float(m["tau"]), float(m["scale"] or 1)))
    return out


def _half_unit_of_value(x: float) -> float:
    """Half a unit in the last digit of ``x``'s shortest repr (wider than printed where the
    printed number ends in 0, so intervals built from it are conservative)."""
    mant, _, exp = f"{float(x):.15g}".lower().partition("e")
    mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
    decimals = len(mant.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exp) if exp else 0))


def check_printed_g(table: pd.DataFrame, convention: GConvention) -> pd.DataFrame:
    """Recompute every printed G of ``table`` from its own row (TEC, Acc, IEC) with Eq. 1.

    Returns one row per (method, printed G): label, column, mui, tau, printed, recomputed,
    recomputed_as_printed (rounded like the table), difference (recomputed - printed),
    reproduced (rounded recomputed == printed) and within_input_rounding (some TEC, Acc and IEC
    inside half a printed unit of the row's values give a G that prints as the printed one).
    """
    acc_div = 100.0 / metric.check_acc_unit(convention.acc_unit)
    rows = []
    for pg in printed_g_columns(table):
        if pg.scale != convention.scale:
            raise ValueError(f"column {pg.column} has scale {pg.scale:g}; {convention.name} uses {convention.scale:g}")
        acc = table["acc_percent"].to_numpy(float)
        tec, iec = table["tec_wh"].to_numpy(float), table["iec_wh"].to_numpy(float)
        d_in = 0.5 * 10.0 ** -INPUT_DECIMALS
        d_iec = np.array([_half_unit_of_value(x) for x in iec])

        def g(a, t, i):
            return np.asarray(metric.greeness(a / acc_div, t, i, pg.mui, pg.tau, convention.acc_unit)) * pg.scale

        recomputed = g(acc, tec, iec)
        printed = table[pg.column].to_numpy(float)
        # G rises with Acc and falls with TEC and IEC: the extremes sit at opposite corners.
        g_lo = g(np.clip(acc - d_in, 0, None), tec + d_in, iec + d_iec)
        g_hi = g(np.minimum(acc + d_in, 100.0), np.clip(tec - d_in, 0, None), np.clip(iec - d_iec, 0, None))
        half = convention.half_unit(printed)
        as_printed = convention.as_printed(recomputed)
        rows.append(pd.DataFrame({
            "label": table["label"].to_numpy(), "column": pg.column, "mui": pg.mui, "tau": pg.tau,
            "printed": printed, "recomputed": recomputed, "recomputed_as_printed": as_printed,
            "difference": recomputed - printed,
            "reproduced": np.isclose(as_printed, printed, rtol=1e-12, atol=0),
            "within_input_rounding": (g_hi >= printed - half) & (g_lo <= printed + half),
        }))
    return pd.concat(rows, ignore_index=True)


# --- the figures' selections and Section 4.2.1's claims --------------------------------------

FIGURE2_METHODS: tuple[str, ...] = (
    "APoZ VGG16", "INT8 VGG16", "CRD VGG13→VGG8", "ProxylessNAS (CIFAR100)", "VGG16 baseline",
)
"""Figure 2's (and Figure 6's) five methods, as its caption lists them."""

FIGURE2B_MUI = 1e9
"""Figure 2 (b) draws G against tau at this MUI (its caption)."""

FIGURE3_PANELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "a": ("CRD, various teacher→student pairs", ("CRD VGG13→VGG8", "CRD ResNet56→ResNet20")),
    "b": ("ResNet56→ResNet20, various distillers", ("CRD ResNet56→ResNet20", "KD ResNet56→ResNet20")),
}
"""Figure 3's panels the tables can draw (only the pairs and methods Table 3 lists). Panel c
(INT8 on various models) and d (pruners on ResNet18) have no rows in the tables."""


@dataclass(frozen=True)
class MuiClaim:
    """'``leader`` has a higher G than each of ``others`` when MUI < ``below_mui``'."""

    quote: str
    leader: str
    others: tuple[str, ...]
    below_mui: float
    tau: float = 2.0


@dataclass(frozen=True)
class TauClaim:
    """'At MUI = ``mui``, ``small_tau_leader`` has the higher G when tau is small and
    ``large_tau_leader`` when tau is large'."""

    quote: str
    small_tau_leader: str
    large_tau_leader: str
    mui: float


SECTION_421_CLAIMS: tuple[MuiClaim, ...] = (
    MuiClaim("[Pruning] outperforms both NAS and Distillation when MUI is less than 1.37 billion.",
             leader="APoZ VGG16", others=("ProxylessNAS (CIFAR100)", "CRD VGG13→VGG8"),
             below_mui=1.37e9),
    MuiClaim("Only training the base models outperforms all three types of methods expect "
             "quantization when MUI is less than 124 million.",
             leader="VGG16 baseline", others=("APoZ VGG16", "CRD VGG13→VGG8", "ProxylessNAS (CIFAR100)"),
             below_mui=124e6),
)
"""The two MUI thresholds Section 4.2.1 states, with the Figure 2 methods they compare."""

SECTION_421_TAU_CLAIM = TauClaim(
    "The figure shows that NAS algorithm has higher greeness score when τ is small and pruning "
    "algorithm has higher greeness score when τ is large.",
    small_tau_leader="ProxylessNAS (CIFAR100)", large_tau_leader="APoZ VGG16", mui=FIGURE2B_MUI)
"""Section 4.2.1 on Figure 2 (b) (the text calls it Figure 6 (b)): G vs tau at MUI = 1e9."""


@dataclass(frozen=True)
class MuiClaimCheck:
    claim: MuiClaim
    source: str  # which numbers were used, e.g. "Table 3"
    leads_until_mui: float  # the leader beats every other on all of (0, this)
    first_overtaken_by: str | None  # the method whose crossover sets that bound

    @property
    def holds(self) -> bool:
        """The leader does beat every other for all MUI below the claimed value."""
        return self.leads_until_mui >= self.claim.below_mui

    @property
    def threshold_agrees(self) -> bool:
        """The computed bound equals the claimed one to the claim's 3 significant figures."""
        return f"{self.leads_until_mui:.3g}" == f"{self.claim.below_mui:.3g}"

    def sentence(self) -> str:
        c, m = self.claim, self.leads_until_mui
        others = ", ".join(c.others)
        if m == 0:
            found = f"{c.leader} does not have the highest G against {others} even at the smallest MUI"
        elif np.isinf(m):
            found = f"{c.leader} has a higher G than {others} at every MUI"
        else:
            found = (f"{c.leader} has a higher G than each of {others} for every MUI below {m:.3g} "
                     f"(where {self.first_overtaken_by} overtakes it)")
        verdict = ("supports the claim: it holds and the threshold agrees to 3 significant figures"
                   if self.holds and self.threshold_agrees else
                   f"supports the statement as a bound (it holds below {c.below_mui:.3g}) but not its "
                   f"threshold: the crossover is {m / c.below_mui:.3g} x the quoted value"
                   if self.holds else
                   f"does not support it: between {m:.3g} and {c.below_mui:.3g} {self.first_overtaken_by} "
                   f"has the higher G")
        return (f"Claim (tau = {c.tau:g}, MUI < {c.below_mui:.3g}): \"{c.quote}\" Computed from "
                f"{self.source}: {found}. This {verdict}.")


def check_mui_claim(claim: MuiClaim, table: pd.DataFrame, source: str) -> MuiClaimCheck:
    """Where ``claim.leader`` stops beating all of ``claim.others``, computed from ``table``."""
    per_other = {o: metric.leads_until(table, claim.leader, [o], claim.tau) for o in claim.others}
    binding = min(per_other, key=per_other.get)  # the first to overtake the leader
    bound = per_other[binding]
    if np.isinf(bound):
        binding = None
    return MuiClaimCheck(claim, source, bound, binding)


@dataclass(frozen=True)
class TauClaimCheck:
    claim: TauClaim
    source: str
    crossover_tau: float  # NaN if the two never swap order for tau > 0
    leader_below: str  # higher G for tau below the crossover (or everywhere)
    leader_above: str

    @property
    def holds(self) -> bool:
        return (self.leader_below == self.claim.small_tau_leader
                and self.leader_above == self.claim.large_tau_leader)

    def sentence(self) -> str:
        c, t = self.claim, self.crossover_tau
        if np.isnan(t):
            found = f"{self.leader_below} has the higher G at every tau"
        else:
            found = (f"{self.leader_below} has the higher G for tau < {t:.3g} and "
                     f"{self.leader_above} for tau > {t:.3g}")
        verdict = "supports" if self.holds else "contradicts"
        return (f"Claim (MUI = {c.mui:.3g}): \"{c.quote}\" Computed from {self.source}: {found}. "
                f"This {verdict} the claim ({c.small_tau_leader} vs {c.large_tau_leader}).")


def check_tau_claim(claim: TauClaim, table: pd.DataFrame, source: str) -> TauClaimCheck:
    """Where the two methods of ``claim`` swap order in tau at ``claim.mui``, from ``table``."""
    t = table.set_index("label")
    a, b = t.loc[claim.small_tau_leader], t.loc[claim.large_tau_leader]
    args = (a["acc_percent"], a["tec_wh"], a["iec_wh"], b["acc_percent"], b["tec_wh"], b["iec_wh"])
    tau_x = metric.crossover_tau(*args, claim.mui, acc_unit="percent")

    def leader(tau: float) -> str:
        ga = metric.greeness(a["acc_percent"], a["tec_wh"], a["iec_wh"], claim.mui, tau, "percent")
        gb = metric.greeness(b["acc_percent"], b["tec_wh"], b["iec_wh"], claim.mui, tau, "percent")
        return claim.small_tau_leader if ga > gb else claim.large_tau_leader

    below = leader(tau_x / 2 if np.isfinite(tau_x) else 1.0)
    above = leader(tau_x * 2) if np.isfinite(tau_x) else below
    return TauClaimCheck(claim, source, float(tau_x), below, above)

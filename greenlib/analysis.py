"""The cross-method analysis (notebook 20): every family's stored runs in one table, and what they say.

Nothing here trains. :func:`collect` gathers, from the results store, the runs each family's
notebook asks for with the profile's own parameters (so the analysis of ``quick`` is exactly what
``make reproduce PROFILE=quick`` measured), one row per run with a ``family`` and a ``label``::

    runs = analysis.collect("quick")
    table = analysis.method_table(runs)            # one row per method: mean Acc, TEC, IEC over seeds
    analysis.check_guidelines(table, 1e6, 1e11)     # the paper's guidelines, each holds / does not hold

A family is one entry of :data:`FAMILIES` (its notebook section, the function that selects its
stored runs, and how its rows are labelled): adding a family touches that registry only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import config, metric
from .config import ConfigError
from .paper import TABLE3, TABLE5, GConvention


@dataclass(frozen=True)
class Family:
    """How the analysis finds and names one method family's runs."""

    name: str
    section: str  # the notebook's config section
    stored: Callable[[config.Resolved], pd.DataFrame]  # the runs the section's parameters ask for
    label: Callable[[pd.Series], str]  # one method's name, unique within the family
    method: Callable[[pd.Series], str]  # the method alone (Figure 3's legends)
    compressed: bool = True  # False: the uncompressed reference (baselines)


def _baselines(cfg):
    from .experiments import stored_baselines
    return stored_baselines(cfg)


def _prunings(cfg):
    from .prune import stored_prunings
    return stored_prunings(cfg)


def _quantized(cfg):
    from .quantize.runs import stored_runs
    return stored_runs(cfg)


def _distilled(cfg):
    from .distill import stored_distillations
    return stored_distillations(cfg)


def _nas(cfg):
    from .nas import stored_nas
    return stored_nas(cfg)


def _nas_label(r: pd.Series) -> str:
    classes = r.get("search_classes")
    return str(r["strategy"]) + (f" (searched on {int(classes)} classes)" if classes == classes and classes
                                 and int(classes) != 100 else "")


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("baseline", "baselines", _baselines, lambda r: f"{r['model']} baseline", lambda r: "baseline",
           compressed=False),
    Family("pruning", "pruning", _prunings, lambda r: f"{r['model']} {r['pruner']}", lambda r: str(r["pruner"])),
    Family("quantization", "quantization", _quantized, lambda r: f"{r['model']} {r['precision']}",
           lambda r: str(r["precision"])),
    Family("distillation", "distillation", _distilled, lambda r: f"{r['teacher']}→{r['student']} {r['method']}",
           lambda r: str(r["method"])),
    Family("nas", "nas", _nas, _nas_label, lambda r: str(r["strategy"])),
)}

RUN_COLUMNS = ("family", "label", "method", "model", "seed", "hardware", "dataset", "dataset_description",
               "energy_measured_by", "estimated", "acc", "tec_wh", "iec_wh", "params", "flops_per_image", "run_id")


def collect(profile: str, families: Sequence[str] | None = None) -> pd.DataFrame:
    """Every family's stored runs that its notebook's ``profile`` parameters ask for, one row per run.

    Columns :data:`RUN_COLUMNS` (plus the family's own, e.g. ``pruner``, ``teacher``); a family
    with no stored runs contributes none. A method stored on several GPUs gets one label per GPU
    (``vgg16 apoz · NVIDIA H200``). ConfigError names an unknown family.
    """
    names = list(FAMILIES) if families is None else list(families)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ConfigError(f"unknown method family {unknown[0]!r}; accepted: {', '.join(FAMILIES)}")
    frames = []
    for name in names:
        fam = FAMILIES[name]
        if fam.section not in config.SECTIONS:
            continue
        df = fam.stored(config.resolve(fam.section, profile=profile))
        if df is None or df.empty:
            continue
        df = df.assign(family=name, label=df.apply(fam.label, axis=1), method=df.apply(fam.method, axis=1))
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    # the same method measured on two GPUs: two methods, told apart by their label
    on = out.groupby("label")["hardware"].transform("nunique")
    out.loc[on > 1, "label"] = out.loc[on > 1, "label"] + " · " + out.loc[on > 1, "hardware"].astype(str)
    for col in RUN_COLUMNS:
        if col not in out:
            out[col] = np.nan
    front = [c for c in RUN_COLUMNS if c in out]
    return out[front + [c for c in out.columns if c not in front]]


def method_table(runs: pd.DataFrame, keys: Sequence[str] = ("family", "label", "hardware", "dataset")) -> pd.DataFrame:
    """One row per method: mean Acc (%), TEC and IEC (W·h) over its seeds, their SD and ``n_seeds``.

    ``estimated`` is true where any run's energy was estimated (not measured by a GPU counter).
    """
    if runs.empty:
        return pd.DataFrame(columns=[*keys, "acc_percent", "tec_wh", "iec_wh", "n_seeds"])
    d = runs.assign(acc_percent=100 * runs["acc"].astype(float))
    first = {c: "first" for c in ("method", "model", "dataset_description", "energy_measured_by") if c in d}
    agg = d.groupby(list(keys), sort=False, dropna=False).agg(
        acc_percent=("acc_percent", "mean"), acc_percent_sd=("acc_percent", "std"),
        tec_wh=("tec_wh", "mean"), tec_wh_sd=("tec_wh", "std"), iec_wh=("iec_wh", "mean"),
        iec_wh_sd=("iec_wh", "std"), n_seeds=("acc", "size"), estimated=("estimated", "any"),
        params=("params", "first"), flops_per_image=("flops_per_image", "first"),
        **{c: (c, how) for c, how in first.items()}).reset_index()
    return agg


def g_columns(table: pd.DataFrame, muis: Sequence[float], taus: Sequence[float],
              convention: GConvention) -> pd.DataFrame:
    """``table`` with one G column per (MUI, tau), in ``convention`` (``G(1B, tau=2)``)."""
    from .report import mui_label

    out = table.copy()
    unit = metric.ACC_UNITS[convention.acc_unit]
    for tau in taus:
        for mui in muis:
            out[f"G({mui_label(mui)}, tau={tau:g})"] = convention.scale * metric.greeness(
                out["acc_percent"].to_numpy() / 100 * unit, out["tec_wh"].to_numpy(), out["iec_wh"].to_numpy(),
                mui, tau=tau, acc_unit=convention.acc_unit)
    return out


def pick(table: pd.DataFrame, labels: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The rows of ``table`` with these labels, in this order, and the labels it lacks.

    ConfigError where it has none of them (naming the labels it has).
    """
    have = set(table["label"])
    missing = [x for x in labels if x not in have]
    if len(missing) == len(labels):
        raise ConfigError(f"none of the representatives {list(labels)} is in the results; labels stored: "
                          f"{', '.join(sorted(have)) or 'none'}")
    rows = pd.concat([table[table["label"] == x] for x in labels if x in have], ignore_index=True)
    return rows, missing


def convention_for(tau: float) -> GConvention:
    """Table 3's convention at tau = 2, Table 5's otherwise (as the paper prints them)."""
    return TABLE3 if tau == 2 else TABLE5


# --- the paper's guidelines ----------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """One guideline tested against the measured table."""

    guideline: str
    holds: bool | None  # None: cannot be tested (a family it names has no runs)
    evidence: str

    def sentence(self) -> str:
        word = {True: "holds", False: "does not hold", None: "cannot be tested"}[self.holds]
        return f"{self.guideline}: **{word}**. {self.evidence}"


def best_family(table: pd.DataFrame, mui: float, tau: float = 2.0) -> pd.DataFrame:
    """Per family, its method of highest G at (``mui``, ``tau``), best family first."""
    g = metric.greeness(table["acc_percent"].to_numpy() / 100, table["tec_wh"].to_numpy(),
                        table["iec_wh"].to_numpy(), mui, tau=tau)
    t = table.assign(g=g).sort_values("g", ascending=False)
    return t.groupby("family", sort=False).head(1).reset_index(drop=True)


def _family_guideline(table: pd.DataFrame, mui: float, tau: float, favoured: Sequence[str], guideline: str
                      ) -> Verdict:
    compressed = table[table["family"].map(lambda f: FAMILIES[f].compressed if f in FAMILIES else True)]
    present = set(compressed["family"])
    if not set(favoured) & present:
        return Verdict(guideline, None, f"No stored runs of {', '.join(favoured)}.")
    ranking = best_family(compressed, mui, tau)
    top = ranking.iloc[0]
    order = "; ".join(f"{r.family}: {r.label} (G = {r.g:.3g})" for r in ranking.itertuples())
    absent = [f for f in FAMILIES if FAMILIES[f].compressed and f not in present]
    note = f" Families without runs: {', '.join(absent)}." if absent else ""
    return Verdict(guideline, bool(top["family"] in favoured),
                   f"At MUI = {mui:.0e}, tau = {tau:g}, the best method of each family (Acc as a fraction, G "
                   f"unscaled): {order}.{note}")


def quantization_helps(table: pd.DataFrame, mui_min: float, mui_max: float, tau: float = 2.0) -> Verdict:
    """Every quantized model against the same model deployed in fp32 (notebook 03's own fp32 row:
    the same trained weights, its IEC measured the same way).

    G's ratio is monotonic in MUI, so checking both ends of [mui_min, mui_max] covers the range.
    """
    guideline = "Quantization always helps (G of every quantized model >= the same model's in fp32, over the MUI range)"
    q = table[table["family"] == "quantization"]
    prec = q["label"].str.rsplit(" ", n=1).str[-1]
    base = q[prec == "fp32"].set_index("model")
    lines, ok, failing = [], [], []
    for r in q[prec != "fp32"].itertuples():
        if r.model not in base.index:
            lines.append(f"{r.label}: no fp32 row of {r.model} to compare with")
            continue
        b = base.loc[r.model]
        b = b.iloc[0] if isinstance(b, pd.DataFrame) else b
        ratios = [metric.greeness(r.acc_percent / 100, r.tec_wh, r.iec_wh, m, tau=tau)
                  / metric.greeness(b.acc_percent / 100, b.tec_wh, b.iec_wh, m, tau=tau) for m in (mui_min, mui_max)]
        helps = all(x >= 1 for x in ratios)
        ok.append(helps)
        est = " (IEC estimated on the CPU)" if r.estimated else ""
        if not helps:
            failing.append(r.label + est)
        lines.append(f"{r.label}{est}: G / G(fp32) = {ratios[0]:.3f} at {mui_min:.0e}, {ratios[1]:.3f} at {mui_max:.0e}")
    if not ok:
        return Verdict(guideline, None, ("; ".join(lines) + ".") if lines else "No stored quantized runs.")
    tail = f" Not helping: {', '.join(failing)}." if failing else ""
    return Verdict(guideline, all(ok), f"{sum(ok)} of {len(ok)} quantized models help.{tail} " + "; ".join(lines) + ".")


def check_guidelines(table: pd.DataFrame, mui_min: float, mui_max: float,
                    taus: Sequence[float] = (2.0,)) -> list[Verdict]:
    """The paper's three guidelines (Section 5), each tested at every tau, from the measured table."""
    out = []
    for tau in taus:
        out.append(_family_guideline(table, mui_min, tau, ["pruning"],
                                     f"Low usage favours pruning (tau = {tau:g})"))
        out.append(_family_guideline(table, mui_max, tau, ["nas", "distillation"],
                                     f"High usage favours NAS and distillation (tau = {tau:g})"))
        out.append(quantization_helps(table, mui_min, mui_max, tau))
    return out


def seeds_statement(table: pd.DataFrame) -> str:
    """What the error bars are, from the table's seed counts."""
    n = table["n_seeds"]
    if (n <= 1).all():
        return "Every method ran with one seed in this profile: no error bars (the paper profile runs 3 seeds)."
    return (f"Error bars: one standard deviation over seeds ({int(n.min())} to {int(n.max())} seeds per method); "
            "methods with one seed have none.")


def crossovers(rows: pd.DataFrame, taus: Sequence[float]) -> pd.DataFrame:
    """Every pairwise crossover MUI of ``rows`` at each tau (NaN: the pair never crosses)."""
    return pd.concat([metric.pairwise_crossovers(rows, tau=tau).assign(tau=tau) for tau in taus],
                     ignore_index=True)


def winners(rows: pd.DataFrame, mui_min: float, mui_max: float, taus: Sequence[float]) -> pd.DataFrame:
    """The method (and family) with the highest G in each MUI region, per tau."""
    fam = dict(zip(rows["label"], rows["family"]))
    out = pd.concat([metric.winner_regions(rows, mui_min, mui_max, tau).assign(tau=tau) for tau in taus],
                    ignore_index=True)
    out.insert(1, "family", out["winner"].map(fam))
    return out


def figure3_panels(table: pd.DataFrame) -> dict[str, tuple[str, pd.DataFrame]]:
    """The paper's Figure 3 panels from the measured table: (a) CRD per pair, (b) distillers on
    ResNet56 -> ResNet20, (c) INT8 per model, (d) pruners on ResNet18. Empty frames where no runs."""
    fam, lab = table["family"], table["label"]
    return {
        "a": ("CRD, teacher→student pairs", table[(fam == "distillation") & lab.str.endswith(" CRD")]
              .assign(label=lambda d: d["label"].str.removesuffix(" CRD"))),
        "b": ("ResNet56→ResNet20, distillers", table[(fam == "distillation") & lab.str.startswith("resnet56→resnet20 ")]
              .assign(label=lambda d: d["label"].str.removeprefix("resnet56→resnet20 "))),
        "c": ("INT8, models", table[(fam == "quantization") & lab.str.endswith(" int8")]),
        "d": ("ResNet18, pruners", table[(fam == "pruning") & lab.str.startswith("resnet18 ")]
              .assign(label=lambda d: d["label"].str.removeprefix("resnet18 "))),
    }


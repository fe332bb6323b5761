"""The cross-method analysis (notebook 20): every family's stored runs in one table, and what they say.

Nothing here trains. :func:`collect` gathers, from the results store, the runs each family's
notebook asks for with the profile's own parameters (so the analysis of ``quick`` is exactly what
``make reproduce PROFILE=quick`` measured), one row per run with a ``family`` and a ``label``::

    runs = analysis.collect("quick")
    table = analysis.method_table(runs)            # one row per method: mean Acc, TEC, IEC over seeds
    measured, estimated = analysis.split_estimated(table)   # estimated rows: their own table, nowhere else
    tol = analysis.tolerance(runs)                 # the relative G gap repeated measurements can make
    analysis.check_guidelines(table, 1e6, 1e11, tolerance=tol.value)  # holds / does not hold / inconclusive

Estimated energy (a CPU figure from CPU time x an assumed power) never enters Figure 2, the winner
regions, the crossovers or a guideline verdict: :func:`pick`, :func:`crossovers` and :func:`winners`
refuse such rows, the guidelines leave them out and say so.

A family is one entry of :data:`FAMILIES` (its notebook section, the function that selects its
stored runs, and how its rows are labelled): adding a family touches that registry only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import config, metric, paper
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
    return _quantized_from(stored_runs(cfg))


def _quantized_from(df: pd.DataFrame) -> pd.DataFrame:
    """Stored quantized runs with ``hardware`` where inference ran (the deployment's: a quantized
    model's IEC is measured there) and ``train_hardware`` where its base model trained."""
    if df is None or df.empty:
        return df
    return df.assign(train_hardware=df["hardware"], hardware=df["deploy_hardware"])


def _distilled(cfg):
    from .distill import stored_distillations
    return stored_distillations(cfg)


def _nas(cfg):
    from .nas import stored_nas
    return stored_nas(cfg)


BACKEND_NAMES = {"pytorch": "PyTorch", "tensorrt": "TensorRT"}
DEVICE_NAMES = {"cuda": "GPU", "cpu": "CPU"}


def _quantized_label(r: pd.Series) -> str:
    """``vgg16 int8 (TensorRT, GPU)``, ``vgg16 int8 (PyTorch, CPU, estimated)``: two deployment paths
    of one precision are two methods, and an estimated IEC says so in its name."""
    backend = BACKEND_NAMES.get(str(r["backend"]), str(r["backend"]))
    where = DEVICE_NAMES.get(str(r["deploy_device"]), str(r["deploy_device"]))
    est = ", estimated" if bool(r.get("estimated")) else ""
    return f"{r['model']} {r['precision']} ({backend}, {where}{est})"


def _nas_label(r: pd.Series) -> str:
    classes = r.get("search_classes")
    return str(r["strategy"]) + (f" (searched on {int(classes)} classes)" if classes == classes and classes
                                 and int(classes) != 100 else "")


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("baseline", "baselines", _baselines, lambda r: f"{r['model']} baseline", lambda r: "baseline",
           compressed=False),
    Family("pruning", "pruning", _prunings, lambda r: f"{r['model']} {r['pruner']}", lambda r: str(r["pruner"])),
    Family("quantization", "quantization", _quantized, _quantized_label, lambda r: str(r["precision"])),
    Family("distillation", "distillation", _distilled, lambda r: f"{r['teacher']}→{r['student']} {r['method']}",
           lambda r: str(r["method"])),
    Family("nas", "nas", _nas, _nas_label, lambda r: str(r["strategy"])),
)}

RUN_COLUMNS = ("family", "label", "method", "model", "seed", "hardware", "train_hardware", "dataset",
               "dataset_description", "energy_measured_by", "estimated", "iec_stack", "acc", "tec_wh", "iec_wh",
               "params", "flops_per_image", "run_id")
NO_STACK = "not recorded (stored before stacks were)"


def collect(profile: str, families: Sequence[str] | None = None) -> pd.DataFrame:
    """Every family's stored runs that its notebook's ``profile`` parameters ask for, one row per run.

    Columns :data:`RUN_COLUMNS` (plus the family's own, e.g. ``pruner``, ``teacher``); a family
    with no stored runs contributes none. A method stored on several GPUs gets one label per GPU
    (``vgg16 apoz · NVIDIA H200``). ``hardware`` is where the energy per inference was measured (a
    quantized model's deployment hardware), ``train_hardware`` where the model trained; ``iec_stack``
    how the IEC ran (:data:`NO_STACK` for runs stored before it was recorded). ConfigError names an
    unknown family.
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
    trained = out["train_hardware"] if "train_hardware" in out else pd.Series(None, index=out.index, dtype=object)
    out["train_hardware"] = trained.astype(object).where(trained.notna(), out["hardware"])
    # a run whose metrics lack the stack (pruning stored it only in its inference stage) takes the stage's
    stack = out["iec_stack"] if "iec_stack" in out else pd.Series(None, index=out.index, dtype=object)
    if "inference.stack" in out:
        stack = stack.fillna(out["inference.stack"])
    out["iec_stack"] = stack.fillna(NO_STACK)
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
    first = {c: "first" for c in ("method", "model", "dataset_description", "energy_measured_by", "train_hardware",
                                  "iec_stack", "precision", "backend", "deploy_device") if c in d}
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


def split_estimated(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(measured rows, estimated rows)`` of ``table``: the second are shown in their own table only."""
    est = table["estimated"].fillna(False).astype(bool) if "estimated" in table else pd.Series(False, index=table.index)
    return table[~est], table[est]


def refuse_estimated(rows: pd.DataFrame, what: str) -> None:
    """ConfigError naming every estimated row of ``rows``: ``what`` never takes estimated energy."""
    _, est = split_estimated(rows)
    if len(est):
        raise ConfigError(f"{what} takes measured energy only; estimated rows: {', '.join(map(str, est['label']))} "
                          "(show them in the estimated table)")


BEST_GPU = "quantization:best-gpu"
"""A representative token: the quantized precision of lowest IEC among the *measured* GPU rows of a
model (TensorRT INT8 where present, else FP16 or BF16). ``quantization:best-gpu:<model>`` names the
model; plain, it is the model of the baseline representative in the same list."""
QUANTIZED = ("fp16", "bf16", "int8")  # tf32 and fp32 run fp32 weights: not a quantized model


def best_gpu_quantized(table: pd.DataFrame, model: str) -> str | None:
    """The label of ``model``'s quantized precision of lowest IEC among measured GPU rows, or None."""
    if "precision" not in table:
        return None
    q = table[(table["family"] == "quantization") & (table["model"] == model)
              & (table["deploy_device"] == "cuda") & table["precision"].isin(QUANTIZED)]
    q, _ = split_estimated(q)
    return None if q.empty else str(q.loc[q["iec_wh"].astype(float).idxmin(), "label"])


def resolve_representatives(table: pd.DataFrame, labels: Sequence[str]) -> list[str]:
    """``labels`` with every :data:`BEST_GPU` token replaced by the label it means here (the token
    itself where nothing qualifies, so :func:`pick` reports it missing). ConfigError where a plain
    token has no baseline representative to take its model from."""
    out = []
    for x in labels:
        if not str(x).startswith(BEST_GPU):
            out.append(x)
            continue
        model = str(x)[len(BEST_GPU):].removeprefix(":")
        if not model:
            base = table[(table["family"] == "baseline") & table["label"].isin(labels)]
            if base.empty:
                raise ConfigError(f"representative {x!r} takes its model from the baseline representative, and "
                                  f"{list(labels)} has none stored; write '{BEST_GPU}:<model>'")
            model = str(base["model"].iloc[0])
        out.append(best_gpu_quantized(table, model) or x)
    return out


def pick(table: pd.DataFrame, labels: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The rows of ``table`` with these labels (:data:`BEST_GPU` tokens resolved), in this order,
    and the labels it lacks.

    ConfigError where it has none of them (naming the labels it has), and where one asked for is
    estimated (Figure 2 takes measured energy only).
    """
    labels = resolve_representatives(table, labels)
    have = set(table["label"])
    missing = [x for x in labels if x not in have]
    if len(missing) == len(labels):
        raise ConfigError(f"none of the representatives {list(labels)} is in the results; labels stored: "
                          f"{', '.join(sorted(have)) or 'none'}")
    rows = pd.concat([table[table["label"] == x] for x in labels if x in have], ignore_index=True)
    refuse_estimated(rows, "Figure 2's representatives")
    return rows, missing


def convention_for(tau: float) -> GConvention:
    """Table 3's convention at tau = 2, Table 5's otherwise (as the paper prints them)."""
    return TABLE3 if tau == 2 else TABLE5


# --- our accuracy beside the published one ---------------------------------------------------------

_PAPER_MODELS = ("VGG16", "VGG19", "ResNet18", "VGG13", "VGG8", "ResNet56", "ResNet20")
_NAS_NAMES = {"darts": "Darts", "proxyless": "ProxylessNAS"}
PUBLISHED_EPOCHS = {"baseline": "160 epochs", "pruning": "160 base + 160 fine-tuning epochs (the text)",
                    "quantization": "160 base epochs", "distillation": "teacher 240 + student 240 epochs (CRD)",
                    "nas": "search 50 + retraining 600 (DARTS) / not stated (ProxylessNAS) epochs"}


def at_paper_epochs(family: str, r: pd.Series) -> bool:
    """Whether a run of ``family`` trained for the epochs the paper profile gives its section: the
    paper's (ProxylessNAS: NNI's example's 300 retraining epochs, the paper stating none)."""
    fam = FAMILIES.get(family)
    if fam is None:
        return False
    paper_cfg = config.profile_defaults(fam.section, "paper")
    paper_run = {**paper_cfg, "epochs": paper_cfg.get("epochs", paper_cfg.get("student_epochs")),  # a student's
                 "retrain_epochs": paper_cfg.get(f"{r.get('strategy')}_retrain_epochs")}  # a NAS strategy's
    want = our_epochs(family, pd.Series(paper_run))
    return "?" not in want and our_epochs(family, r) == want


def paper_label(r: pd.Series, known: set[str] | None = None) -> str | None:
    """The paper's Table 3/5 label of a run's method (``APoZ VGG16``, ``CRD VGG13→VGG8``,
    ``ProxylessNAS (CIFAR100)``), or None where the paper has no such row (``known``: Table 5's
    labels, read from its file where not given)."""
    from .models import nni_zoo_name
    from .prune.registry import get_pruner

    names = {nni_zoo_name(n): n for n in _PAPER_MODELS}
    fam, model = r.get("family"), names.get(str(r.get("model")))
    if fam == "baseline" or (fam == "quantization" and r.get("precision") == "fp32"):
        label = f"{model} baseline" if model else None
    elif fam == "pruning":
        label = f"{get_pruner(str(r['pruner'])).method.removesuffix(' Pruner')} {model}" if model else None
    elif fam == "quantization":
        label = f"{str(r.get('precision')).upper()} {model}" if model else None
    elif fam == "distillation":
        t, st = names.get(str(r.get("teacher"))), names.get(str(r.get("student")))
        label = f"{r['method']} {t}→{st}" if t and st else None
    elif fam == "nas":
        classes = r.get("search_classes")
        classes = 100 if classes != classes or classes is None else int(classes)
        label = f"{_NAS_NAMES.get(str(r.get('strategy')), r.get('strategy'))} (CIFAR{classes})"
    else:
        label = None
    known = set(paper.load_table5()["label"]) if known is None else known
    return label if label in known else None


def our_epochs(family: str, r: pd.Series) -> str:
    """The epoch budget a run of ``family`` trained with, in words."""
    def n(key):
        v = r.get(key)
        return "?" if v is None or v != v else f"{int(v)}"
    return {"baseline": lambda: f"{n('epochs')} epochs",
            "pruning": lambda: f"{n('base_epochs')} base + {n('finetune_epochs')} fine-tuning epochs",
            "quantization": lambda: f"{n('base_epochs')} base epochs",
            "distillation": lambda: f"teacher {n('teacher_epochs')} + student {n('epochs')} epochs",
            "nas": lambda: f"search {n('search_epochs')} + retraining {n('retrain_epochs')} epochs",
            }.get(family, lambda: "?")()


def accuracy_beside_paper(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each method of :func:`method_table`'s ``table`` with the paper's accuracy for the same method
    (Table 5, which holds every Table 3 row and two more pruners), both epoch budgets, the gap in
    points and :func:`greenlib.report.accuracy_gap`'s note (``no published value`` where the paper
    has no such row; a short row trained for the published epochs says so). ``runs``: :func:`collect`'s
    rows behind ``table``."""
    from .report import accuracy_gap

    cols = ["family", "label", "paper_label", "acc_percent", "our_epochs", "published_acc_percent", "published_epochs",
            "gap_points", "note"]
    first = runs.drop_duplicates("label").set_index("label")
    published = paper.load_table5().set_index("label")["acc_percent"]
    parts = []
    for fam, rows in table.groupby("family", sort=False):
        rows = rows.assign(paper_label=[paper_label(first.loc[lb], set(published.index)) for lb in rows["label"]])
        rows["published"] = rows["paper_label"].map(published)
        if fam == "distillation":  # the paper's other distillers: CRD's Table 1, which the paper cites
            from .distill.tables import cited_accuracy

            cited = [100 * cited_accuracy(first.loc[lb, "teacher"], first.loc[lb, "student"], first.loc[lb, "method"])
                     for lb in rows["label"]]
            rows["published"] = rows["published"].fillna(pd.Series(cited, index=rows.index))
            rows["paper_label"] = rows["paper_label"].fillna(
                pd.Series([f"{lb} (CRD Table 1)" for lb in rows["label"]], index=rows.index))
        budgets = rows["label"].map(lambda lb: our_epochs(fam, first.loc[lb]))
        for budget, sub in rows.groupby(budgets, sort=False):
            same = {lb: at_paper_epochs(fam, first.loc[lb]) for lb in sub["label"]}
            gap = accuracy_gap(sub, sub, ["label"], budget, PUBLISHED_EPOCHS.get(fam, "?"), published_acc="published",
                               same_budget=same)
            parts.append(gap.merge(sub[["label", "family", "paper_label"]], on="label"))
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


# --- the paper's guidelines ----------------------------------------------------------------------

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
UNTESTABLE, ESTIMATED = "cannot be tested", "no verdict (estimated energy)"
OUTCOMES: tuple[str, ...] = (HOLDS, FAILS, INCONCLUSIVE, UNTESTABLE, ESTIMATED)

TOLERANCE_FLOOR = 0.05
"""The smallest relative G gap a verdict rests on, whatever the store's repeats say: above the
bias the sampled power sources showed against the energy counter (up to 4.2 % on a bursty load,
docs/measurement.md), so a source's own error never passes for a difference."""


@dataclass(frozen=True)
class Tolerance:
    """The relative G gap below which two methods are not told apart, and where it comes from."""

    value: float
    floor: float
    repeats: pd.DataFrame  # one row per repeated measurement: what, quantity, label(s), relative spread

    def sentence(self) -> str:
        if self.repeats.empty:
            return (f"Verdict tolerance {self.value:.1%}: the floor; the store holds no repeated measurement to "
                    "derive it from.")
        top = self.repeats.loc[self.repeats["rel_spread"].idxmax()]
        return (f"Verdict tolerance {self.value:.1%}: the largest relative spread of {len(self.repeats)} repeated "
                f"measurements in the store ({top['what']}: {top['rel_spread']:.1%}), floor {self.floor:.0%}.")


def repeats(runs: pd.DataFrame) -> pd.DataFrame:
    """Repeated measurements in ``runs`` (:func:`collect`'s rows, estimated ones left out), one row each:

    - the same weights' IEC measured twice: a quantized fp32 row deployed with PyTorch on the GPU
      against its base run (``base_run_id``), on the same IEC stack;
    - seeds: a method with several seeds, the relative SD of its IEC and of its TEC.

    Columns ``what``, ``quantity`` (``iec_wh``/``tec_wh``), ``rel_spread`` (|a - b| / mean for a pair,
    SD / mean over seeds).
    """
    cols = ["what", "quantity", "rel_spread"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    r, _ = split_estimated(runs)
    out = []
    if "base_run_id" in r and "precision" in r:
        stack = r["iec_stack"].fillna(NO_STACK) if "iec_stack" in r else pd.Series(NO_STACK, index=r.index)
        by_id = r.assign(_stack=stack).set_index("run_id")
        q = by_id[(by_id["family"] == "quantization") & (by_id["precision"] == "fp32")
                  & (by_id.get("deploy_device") == "cuda") & (by_id.get("backend") == "pytorch")]
        for rid, row in q.iterrows():
            base = row["base_run_id"]
            if base in by_id.index and by_id.loc[base, "_stack"] == row["_stack"]:
                a, b = float(row["iec_wh"]), float(by_id.loc[base, "iec_wh"])
                out.append({"what": f"IEC of {row['model']} (seed {row['seed']}) measured twice, {base} and {rid}",
                            "quantity": "iec_wh", "rel_spread": abs(a - b) / ((a + b) / 2)})
    for (label, hw), g in r.groupby(["label", "hardware"], dropna=False):
        if len(g) < 2:
            continue
        for qty in ("iec_wh", "tec_wh"):
            v = g[qty].astype(float)
            out.append({"what": f"{label} on {hw}, {len(g)} seeds", "quantity": qty, "rel_spread": v.std() / v.mean()})
    return pd.DataFrame(out, columns=cols)


def tolerance(runs: pd.DataFrame, floor: float = TOLERANCE_FLOOR) -> Tolerance:
    """The verdict tolerance: the largest relative spread of :func:`repeats`, at least ``floor``.

    G = Acc^tau / (MUI IEC + TEC) moves by the relative change of IEC where inference dominates and
    of TEC where training does, so their spreads bound G's. ValueError for a floor outside [0, 1).
    """
    if not 0 <= floor < 1:
        raise ValueError(f"floor={floor!r}; accepted: a fraction in [0, 1)")
    rep = repeats(runs)
    spread = float(rep["rel_spread"].max()) if len(rep) else 0.0
    return Tolerance(max(floor, spread), floor, rep)


@dataclass(frozen=True)
class Verdict:
    """One guideline tested against the measured table: an outcome of :data:`OUTCOMES`."""

    guideline: str
    outcome: str
    evidence: str

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome={self.outcome!r}; accepted: {', '.join(OUTCOMES)}")

    @property
    def holds(self) -> bool | None:
        """True / False for a verdict, None for inconclusive, untestable or estimated."""
        return {HOLDS: True, FAILS: False}.get(self.outcome)

    def sentence(self) -> str:
        return f"{self.guideline}: **{self.outcome}**. {self.evidence}"


def _gap_outcome(gap: float, tol: float) -> str:
    """``gap``: relative G of the side the guideline favours over the other, minus 1."""
    return HOLDS if gap > tol else FAILS if gap < -tol else INCONCLUSIVE


def _estimated_note(est: pd.DataFrame) -> str:
    return (f" Left out, energy estimated: {', '.join(map(str, est['label']))}." if len(est) else "")


def best_family(table: pd.DataFrame, mui: float, tau: float = 2.0) -> pd.DataFrame:
    """Per family, its method of highest G at (``mui``, ``tau``), best family first."""
    g = metric.greeness(table["acc_percent"].to_numpy() / 100, table["tec_wh"].to_numpy(),
                        table["iec_wh"].to_numpy(), mui, tau=tau)
    t = table.assign(g=g).sort_values("g", ascending=False)
    return t.groupby("family", sort=False).head(1).reset_index(drop=True)


def _family_guideline(table: pd.DataFrame, mui: float, tau: float, favoured: Sequence[str], guideline: str,
                      tol: float) -> Verdict:
    compressed = table[table["family"].map(lambda f: FAMILIES[f].compressed if f in FAMILIES else True)]
    measured, est = split_estimated(compressed)
    note = _estimated_note(est)
    if not set(favoured) & set(compressed["family"]):
        return Verdict(guideline, UNTESTABLE, f"No stored runs of {', '.join(favoured)}.")
    if not set(favoured) & set(measured["family"]) or measured["family"].nunique() < 2:
        return Verdict(guideline, ESTIMATED, "Too few families with measured energy to compare." + note)
    ranking = best_family(measured, mui, tau)
    fav, other = ranking[ranking["family"].isin(favoured)], ranking[~ranking["family"].isin(favoured)]
    if other.empty:
        return Verdict(guideline, UNTESTABLE, f"No measured family besides {', '.join(favoured)} to compare with." + note)
    gap = fav["g"].iloc[0] / other["g"].iloc[0] - 1
    order = "; ".join(f"{r.family}: {r.label} (G = {r.g:.3g})" for r in ranking.itertuples())
    absent = [f for f in FAMILIES if FAMILIES[f].compressed and f not in set(compressed["family"])]
    missing = f" Families without runs: {', '.join(absent)}." if absent else ""
    return Verdict(guideline, _gap_outcome(gap, tol),
                   f"At MUI = {mui:.0e}, tau = {tau:g}, the best method of each family (Acc as a fraction, G "
                   f"unscaled): {order}. Best favoured over best other: {gap:+.1%} (tolerance ±{tol:.1%})."
                   f"{missing}{note}")


def quantization_helps(table: pd.DataFrame, mui_min: float, mui_max: float, tau: float = 2.0,
                       tol: float = TOLERANCE_FLOOR) -> Verdict:
    """Every quantized model against the same model deployed in fp32 (notebook 03's own fp32 row on
    the same hardware: the same trained weights, its IEC measured the same way).

    G's ratio is monotonic in MUI, so checking both ends of [mui_min, mui_max] covers the range. A
    model hurts where a ratio is below 1 - ``tol``, helps where none is and one exceeds 1 + ``tol``
    (both within the tolerance: inconclusive); the guideline holds if every measured model helps,
    does not hold if one hurts, else is inconclusive.
    Pairs with estimated energy are left out, named; if only those remain: no verdict.
    """
    guideline = "Quantization always helps (G of every quantized model >= the same model's in fp32, over the MUI range)"
    q = table[table["family"] == "quantization"]
    if q.empty:
        return Verdict(guideline, UNTESTABLE, "No stored quantized runs.")
    base = q[q["precision"] == "fp32"]
    lines, outcomes, estimated, failing = [], [], [], []
    for r in q[~q["precision"].isin(["fp32", "tf32"])].itertuples():
        b = base[(base["model"] == r.model) & (base["hardware"] == r.hardware)]
        if bool(r.estimated) or (not b.empty and bool(b["estimated"].iloc[0])):
            estimated.append(r.label)
            continue
        if b.empty:
            lines.append(f"{r.label}: no fp32 row of {r.model} on {r.hardware} to compare with")
            continue
        b = b.iloc[0]
        ratios = [metric.greeness(r.acc_percent / 100, r.tec_wh, r.iec_wh, m, tau=tau)
                  / metric.greeness(b.acc_percent / 100, b.tec_wh, b.iec_wh, m, tau=tau) for m in (mui_min, mui_max)]
        # "helps": never clearly below its fp32 and clearly above it somewhere in the range
        outcome = FAILS if min(ratios) < 1 - tol else HOLDS if max(ratios) > 1 + tol else INCONCLUSIVE
        outcomes.append(outcome)
        if outcome == FAILS:
            failing.append(r.label)
        lines.append(f"{r.label}: G / G(fp32) = {ratios[0]:.3f} at {mui_min:.0e}, {ratios[1]:.3f} at {mui_max:.0e}")
    note = f" Left out, energy estimated: {', '.join(estimated)}." if estimated else ""
    if not outcomes:
        return Verdict(guideline, ESTIMATED if estimated else UNTESTABLE,
                       (("; ".join(lines) + ".") if lines else "No measured quantized model with an fp32 row.") + note)
    outcome = FAILS if FAILS in outcomes else HOLDS if set(outcomes) == {HOLDS} else INCONCLUSIVE
    tail = f" Not helping: {', '.join(failing)}." if failing else ""
    return Verdict(guideline, outcome, f"{outcomes.count(HOLDS)} of {len(outcomes)} measured quantized models help "
                   f"beyond the tolerance (±{tol:.1%}).{tail} " + "; ".join(lines) + "." + note)


def check_guidelines(table: pd.DataFrame, mui_min: float, mui_max: float,
                     taus: Sequence[float] = (2.0,), tolerance: float = TOLERANCE_FLOOR) -> list[Verdict]:
    """The paper's three guidelines (Section 5), each tested at every tau, from the measured table.

    ``tolerance``: the relative G gap within which the outcome is ``inconclusive`` (see
    :func:`greenlib.analysis.tolerance`); estimated rows never decide a verdict.
    """
    out = []
    for tau in taus:
        out.append(_family_guideline(table, mui_min, tau, ["pruning"],
                                     f"Low usage favours pruning (tau = {tau:g})", tolerance))
        out.append(_family_guideline(table, mui_max, tau, ["nas", "distillation"],
                                     f"High usage favours NAS and distillation (tau = {tau:g})", tolerance))
        out.append(quantization_helps(table, mui_min, mui_max, tau, tolerance))
    return out


def seeds_statement(table: pd.DataFrame) -> str:
    """What the error bars are, from the table's seed counts."""
    n = table["n_seeds"]
    if (n <= 1).all():
        return "Every method ran with one seed in this profile: no error bars (the paper profile runs 3 seeds)."
    return (f"Error bars: one standard deviation over seeds ({int(n.min())} to {int(n.max())} seeds per method); "
            "methods with one seed have none.")


def crossovers(rows: pd.DataFrame, taus: Sequence[float]) -> pd.DataFrame:
    """Every pairwise crossover MUI of ``rows`` at each tau (NaN: the pair never crosses).
    ConfigError where a row is estimated."""
    refuse_estimated(rows, "crossovers")
    return pd.concat([metric.pairwise_crossovers(rows, tau=tau).assign(tau=tau) for tau in taus],
                     ignore_index=True)


def winners(rows: pd.DataFrame, mui_min: float, mui_max: float, taus: Sequence[float]) -> pd.DataFrame:
    """The method (and family) with the highest G in each MUI region, per tau. ConfigError where a
    row is estimated."""
    refuse_estimated(rows, "winner regions")
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
        "c": ("INT8, models", table[(fam == "quantization") & (table.get("precision") == "int8")]
              .assign(label=lambda d: d["label"].str.replace(" int8 (", " (", regex=False))),
        "d": ("ResNet18, pruners", table[(fam == "pruning") & lab.str.startswith("resnet18 ")]
              .assign(label=lambda d: d["label"].str.removeprefix("resnet18 "))),
    }



def figure3_titles(panels: dict[str, tuple[str, pd.DataFrame]], runs: pd.DataFrame, profile: str
                   ) -> tuple[str, dict[str, str]]:
    """``(figure title, {panel key: panel title})`` for :func:`figure3_panels`: "energy estimated"
    only on the panels that hold an estimated row, never on the whole figure."""
    from .report import short_caption

    titles = {k: f"({k}) {what}" + (" (energy estimated)" if len(split_estimated(rows)[1]) else "")
              for k, (what, rows) in panels.items()}
    est = [k for k, t in titles.items() if t.endswith("(energy estimated)")]
    note = f" · energy estimated in panel{'s' if len(est) > 1 else ''} {', '.join(f'({k})' for k in est)}" if est else ""
    return (f"Figure 3: G vs MUI, tau = 2\n{short_caption(runs.drop(columns='estimated', errors='ignore'), profile)}"
            f"{note}", titles)

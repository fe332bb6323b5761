"""Grid cells: one run of a family's ``run_*`` function, and the registry that expands a section into them.

A grid entry is a notebook section and its parameters, ``("pruning", {"models": ["vgg16"]})``,
validated by :func:`greenlib.config.resolve` as the notebook's parameters cell would be. Its cells
are the runs the notebook's loop would make (one per model x pruner x seed, ...), each a call of
the same family function with the same parameters, so a grid cell and the notebook produce the
same run (the same id) and each is a cache hit for the other.

Adding a section: one :class:`CellKind` in :data:`KINDS` (how its parameters expand into cells,
which function runs a cell, which stored config entries identify the run, which shared runs it
needs first).
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Sequence

from .. import config as _config
from ..config import ConfigError, Resolved
from ..results import canonical_json


@dataclass(frozen=True)
class Cell:
    """One run: ``kind``'s function called as ``fn(ctx, *args)`` with ``ctx`` prepared from
    ``config.resolve(section, profile, **params)``. ``params`` is canonical JSON (hashable)."""

    kind: str
    section: str
    profile: str
    params_json: str
    args: tuple

    @classmethod
    def make(cls, kind: str, section: str, profile: str, params: Mapping[str, Any], args: Sequence) -> "Cell":
        return cls(kind, section, profile, canonical_json(dict(params)), tuple(args))

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    def resolve(self) -> Resolved:
        return _config.resolve(self.section, profile=self.profile, **self.params)

    @property
    def label(self) -> str:
        """``pruning vgg16 l1 seed=0``: the kind and its arguments."""
        return KINDS[self.kind].label(self.args)

    def describe(self) -> str:
        """The label and the parameters given, for a failure report: enough to rerun the cell alone."""
        return f"{self.label} [{self.section}, profile={self.profile}, params={self.params_json}]"


@dataclass(frozen=True)
class CellKind:
    """How one section becomes grid cells.

    ``expand(cfg)``: the argument tuples of its cells; ``function``: ``"module:name"`` called as
    ``fn(ctx, *args, progress=...)`` in the job (imported there); ``selector(cfg, args)``: stored config
    entries (hardware aside) that identify the finished run; ``requires(cfg, args)``: shared runs
    (as cells) that must exist first; ``label(args)``: a short name; ``stages(cfg, args)``: the
    training stages the run itself trains, as :func:`greenlib.cost.predict` prices them
    (``kind``, ``key``, ``epochs``; shared runs are cells of their own).
    """

    section: str
    expand: Callable[[Resolved], list[tuple]]
    function: str
    selector: Callable[[Resolved, tuple], dict[str, Any]]
    label: Callable[[tuple], str]
    requires: Callable[[Resolved, tuple], list[Cell]] = field(default=lambda cfg, args: [])
    stages: Callable[[Resolved, tuple], list[tuple[str, str, int]]] = field(default=lambda cfg, args: [])
    weights: str | None = None  # "module:name" that regenerates a complete run's gone weights (model.pt)
    # True for the args of a cell whose energy is read from the host's CPU time (PyTorch int8 runs
    # on the CPU): the grid runs it with no other job beside it, whose CPU load would count in it
    alone: Callable[[tuple], bool] = field(default=lambda args: False)

    def load_function(self, weights: bool = False) -> Callable[..., dict[str, Any]]:
        module, name = (self.weights if weights else self.function).split(":")
        return getattr(importlib.import_module(module), name)


def base_cell(cfg: Resolved, model: str, seed: int, epochs: int) -> Cell:
    """The baseline run ``experiments.base_model(ctx, model, seed, epochs)`` uses, as a cell."""
    from ..experiments import base_baseline_config

    bcfg = base_baseline_config(SimpleNamespace(cfg=cfg), model, seed, epochs)
    params = {k: v for k, v in bcfg.items() if k != "profile"}
    return Cell.make("baselines", "baselines", cfg.profile, params, (model, seed))


# -- the sections ------------------------------------------------------------------------------

def _baseline_selector(cfg: Resolved, args: tuple) -> dict[str, Any]:
    from ..experiments import baseline_config

    model, seed = args
    return {**baseline_config(cfg), "model": model, "seed": seed}


def _pruning_selector(cfg: Resolved, args: tuple) -> dict[str, Any]:
    from ..prune.run import pruning_config

    model, pruner, seed = args
    return {**pruning_config(cfg, pruner), "model": model, "seed": seed}


def _quantization_selector(cfg: Resolved, args: tuple) -> dict[str, Any]:
    from ..quantize.runs import quantization_config

    model, precision, seed = args
    sel = {**quantization_config(cfg), "model": model, "seed": seed, "precision": precision}
    if cfg.backend != "auto":  # auto resolves in the job, on its GPU; a named backend is part of the run
        sel["backend"] = cfg.backend
    return sel


def _distillation_cells(cfg: Resolved) -> list[tuple]:
    from ..distill.run import parse_pairs

    return [(t, s, m, seed) for t, s in parse_pairs(cfg.pairs) for m in cfg.methods for seed in cfg.seeds]


def _distillation_selector(cfg: Resolved, args: tuple) -> dict[str, Any]:
    from ..distill.run import distill_config

    teacher, student, method, seed = args
    return distill_config(cfg, teacher, student, method, seed)


def _distillation_requires(cfg: Resolved, args: tuple) -> list[Cell]:
    teacher, student, _, seed = args
    params = {k: v for k, v in cfg.items() if k != "profile"}
    out = [Cell.make("teacher", "distillation", cfg.profile, params, (teacher, seed))]
    if cfg.iec_shared:
        out.append(Cell.make("student_iec", "distillation", cfg.profile, params, (student, seed)))
    return out


def _pruning_stages(cfg: Resolved, args: tuple) -> list[tuple[str, str, int]]:
    from ..prune.registry import get_pruner

    model, pruner, _ = args
    return [("finetune", f"{model}/{get_pruner(pruner).name}", cfg.finetune_epochs)]


def _distillation_stages(cfg: Resolved, args: tuple) -> list[tuple[str, str, int]]:
    from ..distill import registry
    from ..distill.run import pretrain_epochs

    teacher, student, method, _ = args
    key = f"{teacher}:{student}/{method}"
    out = [("distill", key, cfg.student_epochs)]
    if registry.get(method).pretrains:
        out.append(("pretrain", key, pretrain_epochs(cfg.student_epochs)))
    return out


def _nas_selector(cfg: Resolved, args: tuple) -> dict[str, Any]:
    from ..nas.run import nas_config

    strategy, seed, search_classes = args
    return nas_config(cfg, strategy, seed, search_classes)


def _nas_stages(cfg: Resolved, args: tuple) -> list[tuple[str, str, int]]:
    from ..nas.run import retrain_epochs

    strategy = args[0]
    return [("nas_search", strategy, cfg.search_epochs), ("nas_retrain", strategy, retrain_epochs(cfg, strategy))]


def _teacher_selector(cfg: Resolved, args: tuple) -> dict[str, Any]:
    from ..distill.teacher import teacher_config

    teacher, seed = args
    return teacher_config(cfg, teacher, seed)


def _iec_selector(cfg: Resolved, args: tuple) -> dict[str, Any]:
    from ..experiments import shared_config

    student, seed = args
    return {"kind": "iec", "model": student, "seed": seed, **shared_config(cfg)}


KINDS: dict[str, CellKind] = {
    "baselines": CellKind(
        "baselines", lambda cfg: [(m, s) for m in cfg.models for s in cfg.seeds],
        "greenlib.experiments:run_baseline", _baseline_selector,
        lambda a: f"baseline {a[0]} seed={a[1]}", stages=lambda cfg, a: [("train", a[0], cfg.epochs)],
        weights="greenlib.experiments:baseline_weights"),
    "pruning": CellKind(
        "pruning", lambda cfg: [(m, p, s) for m in cfg.models for p in cfg.pruners for s in cfg.seeds],
        "greenlib.prune.run:run_pruning", _pruning_selector,
        lambda a: f"pruning {a[0]} {a[1]} seed={a[2]}",
        lambda cfg, a: [base_cell(cfg, a[0], a[2], cfg.base_epochs)], _pruning_stages),
    "quantization": CellKind(
        "quantization", lambda cfg: [(m, p, s) for m in cfg.models for p in cfg.precisions for s in cfg.seeds],
        "greenlib.quantize.runs:run_quantized", _quantization_selector,
        lambda a: f"quantization {a[0]} {a[1]} seed={a[2]}",
        lambda cfg, a: [base_cell(cfg, a[0], a[2], cfg.base_epochs)], alone=lambda a: a[1] == "int8"),
    "distillation": CellKind(
        "distillation", _distillation_cells, "greenlib.distill.run:run_distillation", _distillation_selector,
        lambda a: f"distillation {a[0]}->{a[1]} {a[2]} seed={a[3]}", _distillation_requires, _distillation_stages),
    # notebook 05's loop: every strategy on its paper space, searched on the dataset (100 classes) or its
    # CIFAR-10-shaped variant (10), then retrained; args in run_nas's order (strategy, seed, search_classes)
    "nas": CellKind(
        "nas", lambda cfg: [(st, s, c) for st in cfg.strategies for c in cfg.search_classes for s in cfg.seeds],
        "greenlib.nas.run:run_nas", _nas_selector,
        lambda a: f"nas {a[0]} searched on {a[2]} classes seed={a[1]}", stages=_nas_stages),
    # not sections of their own: the teacher run every distillation cell needs (RepDistiller's recipe),
    # and the shared student IEC run (iec_shared)
    "teacher": CellKind(
        "distillation", lambda cfg: [], "greenlib.distill.teacher:run_teacher", _teacher_selector,
        lambda a: f"teacher {a[0]} seed={a[1]}",
        stages=lambda cfg, a: [("train", a[0], cfg.teacher_epochs)],
        weights="greenlib.distill.teacher:teacher_weights"),
    "student_iec": CellKind(
        "distillation", lambda cfg: [], "greenlib.distill.run:student_iec", _iec_selector,
        lambda a: f"iec {a[0]} seed={a[1]}"),
}

SECTIONS: tuple[str, ...] = tuple(k for k, v in KINDS.items() if k == v.section)
"""Sections a grid accepts (each notebook section whose runs a family function makes)."""


def expand(section: str, profile: str, params: Mapping[str, Any]) -> list[Cell]:
    """The cells of one grid entry. Raises ConfigError (one line) for an unknown section or a bad
    parameter, before anything is submitted."""
    if section not in SECTIONS:
        raise ConfigError(f"section {section!r} cannot be run as a grid; accepted: {', '.join(SECTIONS)}")
    cfg = _config.resolve(section, profile=profile, **params)
    given = {k: v for k, v in params.items() if v is not None}
    cells = [Cell.make(section, section, profile, given, args) for args in KINDS[section].expand(cfg)]
    for c in cells:  # the selectors validate names the schema cannot (a pruner, a distiller, a pair)
        KINDS[c.kind].selector(cfg, c.args)
    return cells


def selector(cell: Cell) -> dict[str, Any]:
    """The stored config entries (JSON types) that identify ``cell``'s run, hardware aside."""
    return json.loads(canonical_json(KINDS[cell.kind].selector(cell.resolve(), cell.args)))


def requires(cell: Cell) -> list[Cell]:
    return KINDS[cell.kind].requires(cell.resolve(), cell.args)


def runs_alone(cell: Cell) -> bool:
    """Whether ``cell``'s energy comes from the host's CPU time, so that no other job may run beside it."""
    return KINDS[cell.kind].alone(cell.args)


def stages(cell: Cell) -> list[dict[str, Any]]:
    """The training stages ``cell``'s run trains, as rows :func:`greenlib.cost.predict` prices
    (``notebook`` holds the cell's label; ``runs`` is 1)."""
    cfg = cell.resolve()
    return [{"notebook": cell.label, "kind": kind, "key": key, "batch_size": int(cfg.batch_size), "epochs": int(epochs),
             "images": int(cfg.train_size), "runs": 1} for kind, key, epochs in KINDS[cell.kind].stages(cfg, cell.args)]


__all__ = ["Cell", "CellKind", "KINDS", "SECTIONS", "base_cell", "expand", "requires", "selector", "stages"]

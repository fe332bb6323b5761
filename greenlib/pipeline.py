"""The papermill driver behind ``make reproduce`` and ``make figures``.

    python -m greenlib.pipeline run [--profile P] [--only 01_baselines,...] [-p name=value ...] [--redraw]
    python -m greenlib.pipeline list

Notebooks in ``notebooks/`` run in name order; executed copies go to
``notebooks/executed/<profile>/`` (``.../<profile>/redraw/`` with ``--redraw``). A failing
notebook stops the run with its name and failing cell; what earlier notebooks produced stays.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import config
from .paths import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "greenlib"  # registered by `make` in the venv; falls back to python3
GLOBAL_PARAMS = ("profile", "redraw_only")  # passed to every notebook that declares them


class PipelineError(RuntimeError):
    """A one-line reason the pipeline stopped (a notebook failed)."""


class UsageError(PipelineError):
    """Bad input to the pipeline: an unknown notebook or parameter, a malformed value."""


def notebooks(only: Sequence[str] | None = None, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Notebook sources in run order; ``only`` selects by stem (``01_baselines``) or file name."""
    found = sorted(p for p in folder.glob("*.ipynb"))
    if not only:
        return found
    by_stem = {p.stem: p for p in found}
    picked = []
    for name in only:
        stem = Path(name).stem
        if stem not in by_stem:
            raise UsageError(f"unknown notebook {name!r}; accepted: {', '.join(by_stem)}")
        picked.append(by_stem[stem])
    return sorted(picked)


def declared_parameters(nb_path: Path) -> dict[str, Any]:
    """Names and default values the notebook's ``parameters`` cell declares."""
    import papermill as pm

    return {name: spec["default"] for name, spec in pm.inspect_notebook(str(nb_path)).items()}


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["epochs=3", "models=['vgg16']"]`` -> ``{"epochs": 3, "models": ["vgg16"]}``.

    Values are Python literals; anything that is not one is taken as a string.
    """
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"parameter {item!r} is not name=value")
        name, raw = item.split("=", 1)
        try:
            out[name.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[name.strip()] = raw
    return out


def plan(paths: Sequence[Path], profile: str, overrides: dict[str, Any], redraw: bool) -> list[tuple[Path, dict]]:
    """The parameters each notebook gets. Raises PipelineError for a name no notebook declares."""
    config.check_profile(profile)
    declared = {p: declared_parameters(p) for p in paths}
    known = set().union(*(d.keys() for d in declared.values())) if declared else set()
    for name, value in overrides.items():
        if name not in known:
            raise UsageError(f"unknown notebook parameter {name!r}; accepted: {', '.join(sorted(known))}")
        for section, schema in config.SECTIONS.items():  # check the value up front, not mid-run
            if name in schema:
                config.check_value(section, name, value)
    wanted = {"profile": profile, **({"redraw_only": True} if redraw else {}), **overrides}
    return [(p, {k: v for k, v in wanted.items() if k in declared[p]}) for p in paths]


def kernel_name() -> str:
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def kernel_environment() -> None:
    """What every notebook kernel inherits: greenlib importable from this checkout (installed or
    not), and tool caches (matplotlib, IPython, Jupyter runtime) inside the repo, not under $HOME."""
    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    cache = REPO_ROOT / ".cache"
    for var, sub in (("MPLCONFIGDIR", "matplotlib"), ("IPYTHONDIR", "ipython"),
                     ("JUPYTER_RUNTIME_DIR", "jupyter-runtime")):
        os.environ.setdefault(var, str(cache / sub))
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)


def execute(nb_path: Path, out_path: Path, params: dict[str, Any], kernel: str | None = None,
            progress: bool = True) -> float:
    """Run one notebook with papermill; returns wall seconds. Raises PipelineError on failure."""
    import papermill as pm

    kernel_environment()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(nb_path), str(out_path), parameters=params, kernel_name=kernel or kernel_name(),
                            cwd=str(nb_path.parent), progress_bar=progress, log_output=False)
    except pm.PapermillExecutionError as e:
        raise PipelineError(f"notebook {nb_path.name} failed in cell {e.exec_count} (index {e.cell_index}): "
                            f"{e.ename}: {e.evalue.splitlines()[0] if e.evalue else ''}  "
                            f"[executed copy: {out_path}]") from None
    return time.perf_counter() - t0


def run(profile: str | None = None, only: Sequence[str] | None = None, overrides: dict[str, Any] | None = None,
        redraw: bool = False, out_root: Path | None = None, progress: bool = True,
        folder: Path = NOTEBOOKS_DIR) -> list[tuple[str, float]]:
    """Execute the selected notebooks in order; returns (notebook, seconds) for each."""
    if profile:
        source = "from PROFILE"
    else:
        profile = config.default_profile()
        source = "a CUDA GPU is visible" if profile == "quick" else "no CUDA GPU visible"
    config.check_profile(profile)
    print(f"profile: {profile} ({source}; set PROFILE=smoke|quick|paper to choose)", flush=True)
    steps = plan(notebooks(only, folder), profile, overrides or {}, redraw)
    out_dir = (out_root or folder / "executed") / profile / ("redraw" if redraw else "")
    kernel = kernel_name()
    times = []
    for i, (nb, params) in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {nb.stem} ...", flush=True)
        secs = execute(nb, out_dir / nb.name, params, kernel=kernel, progress=progress)
        times.append((nb.stem, secs))
        print(f"[{i}/{len(steps)}] {nb.stem} done in {secs:.1f} s -> {_short(out_dir / nb.name)}", flush=True)
    print(f"all {len(steps)} notebooks done in {sum(t for _, t in times):.1f} s (profile {profile})", flush=True)
    return times


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m greenlib.pipeline", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute notebooks with papermill")
    r.add_argument("--profile", default=os.environ.get("PROFILE") or None,
                   help="smoke | quick | paper (default: $PROFILE, else quick with a GPU, smoke without)")
    r.add_argument("--only", default="", help="comma-separated notebook names (default: all)")
    r.add_argument("-p", "--param", action="append", default=[], help="name=value passed to notebooks")
    r.add_argument("--redraw", action="store_true", help="redraw tables and figures from stored results only")
    sub.add_parser("list", help="list notebooks and their parameters")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "list":
            for nb in notebooks():
                print(f"{nb.stem}: {', '.join(declared_parameters(nb))}")
            return 0
        only = [s for s in args.only.split(",") if s.strip()]
        run(args.profile, only, parse_overrides(args.param), redraw=args.redraw)
    except (UsageError, config.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

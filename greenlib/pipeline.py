"""The papermill driver behind ``make reproduce`` and ``make figures``.

    python -m greenlib.pipeline run [--profile P] [--only 01_baselines,...] [-p name=value ...] [--redraw]
    python -m greenlib.pipeline list

Notebooks in ``notebooks/`` run in name order; executed copies go to
``notebooks/executed/<profile>/`` (``.../<profile>/redraw/`` with ``--redraw``), cleaned of
progress-bar frames, of this machine's checkout path and of kernel warnings. A copy is written
under a temporary name and moved into place only when its notebook succeeds; a failing notebook
stops the run with its name and failing cell, and its copy goes to ``<name>.failed.ipynb`` (what
earlier notebooks produced stays). Runs the store holds but cannot read (incomplete) are named
before the notebooks start and again once a notebook has recomputed them. ``profile`` and
``redraw_only`` come from ``--profile`` and ``--redraw`` only. Kernels keep their connection
files (they hold the kernel's key) in ``$JUPYTER_RUNTIME_DIR`` (``.cache/jupyter-runtime/``) and
their own output in ``.cache/kernel-logs/<notebook>.log``: nothing is written outside the repo.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from . import config
from .paths import REPO_ROOT, results_dir

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "greenlib"  # registered by `make` in the venv; falls back to python3
GLOBAL_PARAMS = ("profile", "redraw_only")  # passed to every notebook that declares them


class PipelineError(RuntimeError):
    """A one-line reason the pipeline stopped (a notebook failed)."""


class UsageError(PipelineError):
    """Bad input to the pipeline: an unknown notebook or parameter, a malformed value."""


class Interrupted(PipelineError):
    """The run was stopped with Ctrl-C (SIGINT)."""


def notebooks(only: Sequence[str] | None = None, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Notebook sources in run order; ``only`` selects by stem (``01_baselines``) or file name
    (None: all of them; an empty selection is an error, not "all")."""
    found = sorted(p for p in folder.glob("*.ipynb"))
    by_stem = {p.stem: p for p in found}
    if only is None:
        return found
    if not only:
        raise UsageError(f"--only names no notebook; accepted: {', '.join(by_stem)}")
    picked = []
    for name in only:
        stem = Path(name).stem
        if stem not in by_stem:
            raise UsageError(f"unknown notebook {name!r}; accepted: {', '.join(by_stem)}")
        picked.append(by_stem[stem])
    return sorted(picked)


def declared_parameters(nb_path: Path) -> dict[str, Any]:
    """Names and default values the notebook's ``parameters`` cell declares.

    Read from the notebook's JSON with :mod:`ast` (a parameters cell holds flat literals), so
    checking ``-p`` values imports neither papermill nor Jupyter and starts no kernel. A default
    that is not a literal is returned as its source text.
    """
    cells = json.loads(Path(nb_path).read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        return {}
    source = tagged[0]["source"]
    source = "".join(source) if isinstance(source, list) else source
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise UsageError(f"{Path(nb_path).name}: its parameters cell is not Python ({e.msg}, line {e.lineno})") from None
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            targets, value = node.targets, node.value
        else:
            continue  # imports, comments' neighbours: not parameters
        try:
            default = ast.literal_eval(value)
        except ValueError:
            default = ast.get_source_segment(source, value)
        out.update({t.id: default for t in targets})
    return out


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
        if name in GLOBAL_PARAMS:  # they choose where runs are stored and copies written: one source
            flag = "--profile" if name == "profile" else "--redraw"
            raise UsageError(f"-p {name}={value!r}: set {name} with {flag}, not -p")
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


KERNEL_LOGS = REPO_ROOT / ".cache" / "kernel-logs"
_CONNECTION_PREFIX = "kernel-greenlib-"


def connection_file() -> Path:
    """A fresh kernel connection file in ``$JUPYTER_RUNTIME_DIR`` named for this host and process,
    so the files a killed driver leaves behind are found and removed by the next one on its host
    (a checkout on a shared file system may serve several nodes)."""
    from jupyter_core.paths import jupyter_runtime_dir

    folder = Path(jupyter_runtime_dir())
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{_CONNECTION_PREFIX}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"


def _host() -> str:
    import socket

    return re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname())


def remove_stale_connection_files() -> list[Path]:
    """Remove connection files whose driver process is gone (killed before it could clean up)."""
    from jupyter_core.paths import jupyter_runtime_dir

    removed = []
    for f in Path(jupyter_runtime_dir()).glob(f"{_CONNECTION_PREFIX}{_host()}-*.json"):
        m = re.match(rf"{re.escape(_CONNECTION_PREFIX + _host())}-(\d+)-", f.name)
        if m and not _alive(int(m[1])):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kernel_manager_class(log_path: Path):
    """jupyter_client's kernel manager, with its connection file in the runtime dir (jupyter_client
    otherwise writes it to /tmp) and the kernel process's own stdout/stderr (start-up warnings,
    tracebacks of a kernel being shut down) in ``log_path`` instead of the terminal."""
    from jupyter_client import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        def __init__(self, **kw):
            kw.setdefault("connection_file", str(connection_file()))
            super().__init__(**kw)

        async def start_kernel(self, **kw):
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log:  # the kernel keeps its own descriptor
                kw.setdefault("stdout", log)
                kw.setdefault("stderr", log)
                return await super().start_kernel(**kw)

    return KernelManager


# -- cleaning an executed notebook -------------------------------------------------------------------

KERNEL_WARNINGS = ("Kernel is running over TCP without encryption",)  # lines dropped from outputs


def terminal_text(text: str) -> str:
    """What a terminal shows of ``text``: each line keeps what follows its last carriage return
    (a progress bar's final state)."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in lines)


def clean_executed(nb: dict, root: Path = REPO_ROOT) -> dict:
    """An executed notebook as it is committed: consecutive stream outputs merged and reduced to
    what a terminal shows (progress bars keep their last frame), kernel warnings dropped, and
    ``root`` (this checkout's absolute path) replaced by relative paths in outputs and metadata.
    Changes ``nb`` in place and returns it."""
    prefix = str(root).rstrip("/") + "/"

    def rel(text: str) -> str:
        return text.replace(prefix, "").replace(str(root), ".")

    def text_of(value) -> str:
        return "".join(value) if isinstance(value, list) else value

    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        merged: list[dict] = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream" \
                    and merged[-1].get("name") == out.get("name"):
                merged[-1]["text"] = text_of(merged[-1]["text"]) + text_of(out["text"])
            else:
                merged.append(out)
        outputs = []
        for out in merged:
            kind = out.get("output_type")
            if kind == "stream":
                lines = terminal_text(text_of(out["text"])).split("\n")
                text = "\n".join(ln for ln in lines if not any(w in ln for w in KERNEL_WARNINGS))
                if not text.strip():
                    continue
                out["text"] = rel(text)
            elif kind in ("execute_result", "display_data"):
                for mime, value in out.get("data", {}).items():
                    if mime.startswith("text/"):
                        out["data"][mime] = rel(text_of(value))
            elif kind == "error":
                out["traceback"] = [rel(t) for t in out.get("traceback", [])]
                out["evalue"] = rel(out.get("evalue", ""))
            outputs.append(out)
        if "outputs" in cell:
            cell["outputs"] = outputs
    meta = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if isinstance(meta.get(key), str):
            meta[key] = rel(meta[key])
    return nb


def execute(nb_path: Path, out_path: Path, params: dict[str, Any], kernel: str | None = None,
            progress: bool = True) -> float:
    """Run one notebook with papermill; returns wall seconds.

    papermill writes into a temporary ``.<name>.<pid>.running.ipynb`` beside ``out_path``; on
    success the cleaned copy replaces ``out_path`` atomically, on failure it goes to
    ``<name>.failed.ipynb`` and ``out_path`` (a good earlier copy) stays. Raises PipelineError on
    failure, :class:`Interrupted` on Ctrl-C.
    """
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    from .io import atomic_write_text

    kernel_environment()
    remove_stale_connection_files()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    running = out_path.with_name(f".{out_path.stem}.{os.getpid()}.running.ipynb")
    failed = out_path.with_name(f"{out_path.stem}.failed.ipynb")
    log = KERNEL_LOGS / f"{out_path.stem}.log"
    log.unlink(missing_ok=True)

    def keep(dest: Path) -> None:  # the cleaned temporary copy, moved into place
        if running.exists():
            nb = clean_executed(json.loads(running.read_text()))
            atomic_write_text(dest, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            running.unlink()

    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(nb_path), str(running), parameters=params, kernel_name=kernel or kernel_name(),
                            cwd=str(nb_path.parent), progress_bar=progress, log_output=False,
                            kernel_manager_class=kernel_manager_class(log))
    except pm.PapermillExecutionError as e:
        keep(failed)
        raise PipelineError(f"notebook {nb_path.name} failed in cell {e.exec_count} (index {e.cell_index}): "
                            f"{e.ename}: {e.evalue.splitlines()[0] if e.evalue else ''}  "
                            f"[executed copy: {_short(failed)}]") from None
    except DeadKernelError:
        keep(failed)
        raise PipelineError(f"notebook {nb_path.name}: its kernel died (out of memory?)  "
                            f"[kernel log: {_short(log)}; executed copy: {_short(failed)}]") from None
    except KeyboardInterrupt:
        # Ctrl-C reaches the kernel too (one process group), so nbclient's pending cell task may end
        # with DeadKernelError; asyncio would log it as "Task exception was never retrieved" when the
        # task is collected. That is the interrupt itself, said in one line below.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        keep(failed)
        raise Interrupted(f"interrupted in {nb_path.name}; its executed copy was not updated (partial copy: "
                          f"{_short(failed)}); finished runs stay in the store and the next run reuses them"
                          ) from None
    except BaseException:
        running.unlink(missing_ok=True)
        raise
    keep(out_path)
    failed.unlink(missing_ok=True)
    return time.perf_counter() - t0


def _incomplete(profile: str) -> dict[str, str]:
    from .results import ResultsStore

    return ResultsStore(results_dir(profile)).incomplete()


def run(profile: str | None = None, only: Sequence[str] | None = None, overrides: dict[str, Any] | None = None,
        redraw: bool = False, out_root: Path | None = None, progress: bool = True,
        folder: Path = NOTEBOOKS_DIR, profile_from: str = "the caller") -> list[tuple[str, float]]:
    """Execute the selected notebooks in order; returns (notebook, seconds) for each.

    ``profile`` None picks the default (quick with a GPU, smoke without); ``profile_from`` says
    where a given one came from (``--profile``, ``$PROFILE``) in the first line printed.
    """
    if profile:
        source = f"from {profile_from}"
    else:
        profile = config.default_profile()
        source = ("a CUDA GPU is visible" if profile == "quick" else "no CUDA GPU visible") + \
            "; set PROFILE=smoke|quick|paper or --profile to choose"
    steps = plan(notebooks(only, folder), profile, overrides or {}, redraw)  # bad input fails before anything runs
    print(f"profile: {profile} ({source})", flush=True)
    out_dir = (out_root or folder / "executed") / profile / ("redraw" if redraw else "")
    broken = _incomplete(profile)
    for rid, why in broken.items():
        print(f"incomplete run {rid} in {_short(results_dir(profile))} ({why}): "
              + ("not recomputed by a redraw" if redraw else "recomputed by the notebook that needs it"), flush=True)
    kernel = kernel_name()
    times = []
    for i, (nb, params) in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {nb.stem} ...", flush=True)
        secs = execute(nb, out_dir / nb.name, params, kernel=kernel, progress=progress)
        times.append((nb.stem, secs))
        print(f"[{i}/{len(steps)}] {nb.stem} done in {secs:.1f} s -> {_short(out_dir / nb.name)}", flush=True)
        if broken:
            still = _incomplete(profile)
            for rid in [r for r in broken if r not in still]:
                print(f"[{i}/{len(steps)}] {nb.stem} recomputed the incomplete run {rid}", flush=True)
            broken = {r: w for r, w in broken.items() if r in still}
    for rid, why in broken.items():
        print(f"incomplete run {rid} is still incomplete ({why}): no notebook of this run needed it", flush=True)
    print(f"all {len(steps)} notebooks done in {sum(t for _, t in times):.1f} s (profile {profile})", flush=True)
    return times


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None, folder: Path = NOTEBOOKS_DIR) -> int:
    ap = argparse.ArgumentParser(prog="python -m greenlib.pipeline", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute notebooks with papermill")
    r.add_argument("--profile", default=None,
                   help="smoke | quick | paper (default: $PROFILE, else quick with a GPU, smoke without)")
    r.add_argument("--only", default=None, help="comma-separated notebook names (default: all)")
    r.add_argument("-p", "--param", action="append", default=[],
                   help="name=value passed to notebooks (not profile or redraw_only: see --profile, --redraw)")
    r.add_argument("--redraw", action="store_true", help="redraw tables and figures from stored results only")
    sub.add_parser("list", help="list notebooks and their parameters")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "list":
            for nb in notebooks(folder=folder):
                print(f"{nb.stem}: {', '.join(declared_parameters(nb))}")
            return 0
        only = None if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
        profile, profile_from = args.profile, "--profile"
        if not profile and os.environ.get("PROFILE"):
            profile, profile_from = os.environ["PROFILE"], "$PROFILE"
        run(profile, only, parse_overrides(args.param), redraw=args.redraw, folder=folder, profile_from=profile_from)
    except (UsageError, config.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"\n{e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted; finished runs stay in the store and the next run reuses them", file=sys.stderr)
        return 130
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

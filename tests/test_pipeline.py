import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_notebook

from greenlib import config, pipeline
from greenlib.paths import REPO_ROOT
from greenlib.results import ResultsStore


def _nb(folder, name, params_src, body_src):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, new_code_cell(body_src)]
    path = folder / f"{name}.ipynb"
    path.write_text(json.dumps(nb))
    return path


def test_parse_overrides_reads_python_literals_and_falls_back_to_strings():
    got = pipeline.parse_overrides(["epochs=3", "models=['vgg16']", "dataset=synthetic", "lr=0.1"])
    assert got == {"epochs": 3, "models": ["vgg16"], "dataset": "synthetic", "lr": 0.1}
    with pytest.raises(pipeline.UsageError, match="'epochs' is not name=value"):
        pipeline.parse_overrides(["epochs"])


def test_plan_passes_each_notebook_only_what_it_declares(tmp_path):
    a = _nb(tmp_path, "00_a", "profile: str = 'smoke'", "pass")
    b = _nb(tmp_path, "01_b", "from typing import Optional\nprofile: str = 'smoke'\nepochs: Optional[int] = None", "pass")
    steps = pipeline.plan([a, b], "quick", {"epochs": 4}, redraw=True)
    assert steps == [(a, {"profile": "quick"}), (b, {"profile": "quick", "epochs": 4})]


def test_plan_rejects_unknown_names_and_bad_values_before_running(tmp_path):
    a = _nb(tmp_path, "00_a", "from typing import Optional\nprofile: str = 'smoke'\nepochs: Optional[int] = None", "pass")
    with pytest.raises(pipeline.UsageError, match="unknown notebook parameter 'epoch'; accepted: epochs, profile"):
        pipeline.plan([a], "smoke", {"epoch": 3}, redraw=False)
    with pytest.raises(config.ConfigError, match="epochs=-1"):
        pipeline.plan([a], "smoke", {"epochs": -1}, redraw=False)
    with pytest.raises(config.ConfigError, match="unknown profile 'huge'"):
        pipeline.plan([a], "huge", {}, redraw=False)


def test_unknown_notebook_is_named():
    with pytest.raises(pipeline.UsageError, match="unknown notebook 'nope'"):
        pipeline.notebooks(["nope"])


@pytest.mark.notebook
def test_failing_notebook_stops_the_run_naming_it_and_keeps_earlier_outputs(tmp_path, capsys):
    _nb(tmp_path, "00_ok", "profile: str = 'smoke'", "open('done.txt', 'w').write(profile)")
    _nb(tmp_path, "01_bad", "profile: str = 'smoke'", "raise ValueError('boom at cell two')")
    _nb(tmp_path, "02_never", "profile: str = 'smoke'", "open('never.txt', 'w').write('x')")
    with pytest.raises(pipeline.PipelineError) as e:
        pipeline.run("smoke", folder=tmp_path, progress=False)
    msg = str(e.value)
    assert "01_bad.ipynb" in msg and "ValueError: boom at cell two" in msg and "\n" not in msg
    assert (tmp_path / "done.txt").read_text() == "smoke"
    assert (tmp_path / "executed" / "smoke" / "00_ok.ipynb").exists()
    assert (tmp_path / "executed" / "smoke" / "01_bad.failed.ipynb").exists()  # the failed copy, for reading
    assert not (tmp_path / "executed" / "smoke" / "01_bad.ipynb").exists()
    assert not (tmp_path / "never.txt").exists()
    assert capsys.readouterr().out.startswith("profile: smoke (from the caller)")


@pytest.mark.parametrize("args, words", [
    (["run", "--profile", "fast"], ["unknown profile 'fast'", "smoke, quick, paper"]),
    (["run", "--profile", "smoke", "-p", "nonsense=1"], ["unknown notebook parameter 'nonsense'"]),
    (["run", "--profile", "smoke", "--only", "99_missing"], ["unknown notebook '99_missing'"]),
    # the profile decides where runs are stored: it comes from --profile only, as redraw from --redraw
    (["run", "--profile", "smoke", "--only", "01_baselines", "-p", "profile=quick"],
     ["-p profile='quick'", "set profile with --profile"]),
    (["run", "--profile", "smoke", "-p", "redraw_only=True"], ["set redraw_only with --redraw"]),
    (["run", "--profile", "smoke", "--only", ","], ["--only names no notebook", "01_baselines"]),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, words):
    out = subprocess.run([sys.executable, "-m", "greenlib.pipeline", *args], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for w in words:
        assert w in err


def test_profile_and_redraw_only_are_not_notebook_overrides(tmp_path):
    a = _nb(tmp_path, "00_a", "profile: str = 'smoke'\nredraw_only: bool = False", "pass")
    for name, value in (("profile", "quick"), ("profile", "smoke"), ("redraw_only", True)):
        with pytest.raises(pipeline.UsageError, match=f"set {name} with --"):
            pipeline.plan([a], "smoke", {name: value}, redraw=False)


def test_declared_parameters_match_papermills_reading_of_every_notebook():
    import papermill as pm

    for nb in pipeline.notebooks():
        theirs = pm.inspect_notebook(str(nb))
        ours = pipeline.declared_parameters(nb)
        assert list(ours) == list(theirs), nb.name
        for name, spec in theirs.items():
            if spec["default"] not in ("None",) and not isinstance(ours[name], str):
                assert ours[name] == eval(spec["default"]), (nb.name, name)  # noqa: S307 (literals)


def test_checking_p_values_starts_no_kernel_and_imports_no_jupyter():
    code = ("import sys; from greenlib import pipeline; "
            "pipeline.plan(pipeline.notebooks(), 'smoke', {'epochs': 3, 'models': ['vgg16']}, redraw=False); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('papermill', 'jupyter_client', 'nbclient', "
            "'ipykernel', 'zmq')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_first_line_says_where_the_profile_came_from(tmp_path, monkeypatch, capsys):
    _nb(tmp_path, "00_a", "profile: str = 'smoke'", "pass")
    monkeypatch.setattr(pipeline, "execute", lambda *a, **k: 0.0)  # no kernel: only the driver's lines
    monkeypatch.setattr(pipeline, "kernel_name", lambda: "python3")
    monkeypatch.delenv("PROFILE", raising=False)
    assert pipeline.main(["run", "--profile", "smoke"], folder=tmp_path) == 0
    assert capsys.readouterr().out.splitlines()[0] == "profile: smoke (from --profile)"
    monkeypatch.setenv("PROFILE", "smoke")
    assert pipeline.main(["run"], folder=tmp_path) == 0
    assert capsys.readouterr().out.splitlines()[0] == "profile: smoke (from $PROFILE)"


def test_dataset_help_names_every_accepted_dataset():
    p = config.SECTIONS["baselines"]["dataset"]
    assert all(name in p.help for name in p.choices)


# -- executed copies ---------------------------------------------------------------------------------

def _stream(name, *texts):
    return [{"output_type": "stream", "name": name, "text": t} for t in texts]


def test_clean_executed_keeps_final_progress_frames_and_drops_paths_and_kernel_warnings():
    root = Path("/home/someone/greeness")
    bar = ["\r", "base:   0%|   | 0/2 [00:00<?]", "\r", "base:  50%|#  | 1/2 [00:01<00:01]",
           "\r", "base: 100%|## | 2/2 [00:02<00:00]\n"]
    nb = {"metadata": {"papermill": {"input_path": f"{root}/notebooks/01.ipynb",
                                     "output_path": f"{root}/notebooks/executed/quick/01.ipynb"}},
          "cells": [{"cell_type": "markdown", "source": "x", "metadata": {}},
                    {"cell_type": "code", "source": "", "metadata": {}, "execution_count": 1, "outputs": [
                        *_stream("stderr", "[IPKernelApp] WARNING | Kernel is running over TCP without encryption. "
                                           "All communication ...\n"),
                        *_stream("stderr", *bar),
                        *_stream("stdout", f"wrote {root}/figures/quick/x.png\n"),
                        *_stream("stderr", f"{root}/greenlib/prune/run.py:89: UserWarning: no weights\n"),
                        {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                         "data": {"text/plain": f"PosixPath('{root}/figures/quick/x.png')",
                                  "image/png": "iVBORw0KGgo"}},
                        {"output_type": "error", "ename": "ValueError", "evalue": f"bad {root}/data",
                         "traceback": [f"File {root}/greenlib/x.py"]}]}]}
    out = pipeline.clean_executed(nb, root)
    outputs = out["cells"][1]["outputs"]
    assert [o["output_type"] for o in outputs] == ["stream", "stream", "stream", "execute_result", "error"]
    assert outputs[0] == {"output_type": "stream", "name": "stderr", "text": "base: 100%|## | 2/2 [00:02<00:00]\n"}
    assert outputs[1]["text"] == "wrote figures/quick/x.png\n"
    assert outputs[2]["text"] == "greenlib/prune/run.py:89: UserWarning: no weights\n"
    assert outputs[3]["data"] == {"text/plain": "PosixPath('figures/quick/x.png')", "image/png": "iVBORw0KGgo"}
    assert outputs[4]["evalue"] == "bad data" and outputs[4]["traceback"] == ["File greenlib/x.py"]
    assert out["metadata"]["papermill"] == {"input_path": "notebooks/01.ipynb",
                                            "output_path": "notebooks/executed/quick/01.ipynb"}
    assert str(root) not in json.dumps(out)


def test_terminal_text_is_what_a_terminal_shows():
    assert pipeline.terminal_text("a\rb\rc\nd\r\ne") == "c\nd\ne"


FIX_RUN = """from greenlib.paths import results_dir
from greenlib.results import ResultsStore
import sys
open('connection.txt', 'w').write(sys.argv[sys.argv.index('-f') + 1])
run = ResultsStore(results_dir(profile)).open({'kind': 'toy', 'model': 'm'}, environment={})
if not run.complete:
    run.finish({'x': 1.0})
from tqdm import tqdm
for _ in tqdm(range(3), file=sys.stderr):
    pass
print(f'at {__import__("os").getcwd()}')"""


@pytest.mark.notebook
def test_a_run_names_and_redoes_incomplete_runs_and_a_failure_keeps_the_good_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GREENLIB_DATA", str(tmp_path / "data"))
    folder = tmp_path / "nbs"
    folder.mkdir()
    store = ResultsStore(tmp_path / "data" / "results" / "smoke")
    broken = store.open({"kind": "toy", "model": "m"}, environment={})
    broken.finish({"x": 0.0})
    (broken.folder / "result.json").write_text("{}")  # readable for a cache that only parses it
    _nb(folder, "00_fix", "profile: str = 'smoke'", FIX_RUN)
    _nb(folder, "01_flaky", "profile: str = 'smoke'", "import os\nassert not os.path.exists('fail.flag'), 'flagged'")
    pipeline.run("smoke", folder=folder, progress=False)
    out = capsys.readouterr().out
    assert f"incomplete run {broken.id}" in out and "result.json lacks" in out
    assert f"00_fix recomputed the incomplete run {broken.id}" in out
    assert store.incomplete() == {} and [r.id for r in store.runs()] == [broken.id]
    # the kernel's connection file (it holds the kernel's key) lived in the runtime dir, and is gone
    conn = Path((folder / "connection.txt").read_text())
    assert conn.parent == Path(os.environ["JUPYTER_RUNTIME_DIR"]) and not conn.exists()
    executed = folder / "executed" / "smoke"
    text = (executed / "00_fix.ipynb").read_text()
    assert "\\r" not in text and "3/3" in text  # the bar's last frame only
    good = (executed / "01_flaky.ipynb").read_text()
    (folder / "fail.flag").write_text("")
    with pytest.raises(pipeline.PipelineError, match=r"01_flaky.ipynb failed .*AssertionError: flagged"):
        pipeline.run("smoke", folder=folder, only=["01_flaky"], progress=False)
    assert (executed / "01_flaky.ipynb").read_text() == good  # the good copy stays
    assert "flagged" in (executed / "01_flaky.failed.ipynb").read_text()
    assert sorted(p.name for p in executed.iterdir()) == ["00_fix.ipynb", "01_flaky.failed.ipynb", "01_flaky.ipynb"]


@pytest.mark.notebook
def test_ctrl_c_prints_one_line_and_leaves_no_kernel_or_connection_file(tmp_path):
    _nb(tmp_path, "00_slow", "profile: str = 'smoke'",
        "import os, sys, time\n"
        "open('kernel.txt', 'w').write(f\"{os.getpid()} {sys.argv[sys.argv.index('-f') + 1]}\")\n"
        "time.sleep(120)")
    code = ("import sys; from pathlib import Path; from greenlib import pipeline; "
            f"sys.exit(pipeline.main(['run', '--profile', 'smoke'], folder=Path({str(tmp_path)!r})))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's job
    marker = tmp_path / "kernel.txt"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    pid, conn = marker.read_text().split(" ", 1)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("Executing")]
    assert len(lines) == 1 and lines[0].startswith("interrupted in 00_slow.ipynb"), err
    assert "Traceback" not in out + err and "ZMQ" not in out + err and "encryption" not in out + err
    assert not Path(conn).exists() and Path(conn).parent == REPO_ROOT / ".cache" / "jupyter-runtime"
    for _ in range(50):  # the kernel is shut down with the driver
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()
    assert not (tmp_path / "executed" / "smoke" / "00_slow.ipynb").exists()


def test_stale_connection_files_of_dead_drivers_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = tmp_path / f"kernel-greenlib-{host}-{dead.stdout.strip()}-abcd1234.json"
    live = pipeline.connection_file()
    other = tmp_path / "kernel-123.json"  # not ours: left alone
    elsewhere = tmp_path / f"kernel-greenlib-{host}x-{dead.stdout.strip()}-abcd1234.json"  # another node's
    for f in (stale, live, other, elsewhere):
        f.write_text("{}")
    assert pipeline.remove_stale_connection_files() == [stale]
    assert live.exists() and other.exists() and elsewhere.exists()


# -- nothing outside the repository; the environment's stamp ------------------------------------------

def test_collecting_the_suite_writes_nothing_under_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR")}
    home = tmp_path / "home"
    home.mkdir()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                          "tests/test_plotting.py", "tests/test_io.py"], cwd=REPO_ROOT, env={**env, "HOME": str(home)},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert list(home.rglob("*")) == []


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_reinstalls_only_when_pyproject_content_changes(tmp_path):
    shutil.copy(REPO_ROOT / "Makefile", tmp_path)
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)

    def dry_run() -> str:  # make -n prints the recipe it would run, and runs none of it
        return subprocess.run(["make", "-n", "venv", f"PYTHON={sys.executable}"], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout

    assert "pip install" in dry_run()  # no stamp yet
    digest = hashlib.sha256((tmp_path / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (tmp_path / ".venv" / f".greenlib-installed-{digest}").touch()
    time.sleep(0.01)
    os.utime(tmp_path / "pyproject.toml")  # a checkout touches the file: same content
    assert "pip install" not in dry_run()
    with open(tmp_path / "pyproject.toml", "a") as f:
        f.write("# changed\n")
    assert "pip install" in dry_run()

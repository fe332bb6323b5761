import json
import subprocess
import sys

import pytest
from nbformat.v4 import new_code_cell, new_notebook

from greenlib import config, pipeline


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
    assert (tmp_path / "executed" / "smoke" / "01_bad.ipynb").exists()  # the failed copy, for reading
    assert not (tmp_path / "never.txt").exists()
    assert capsys.readouterr().out.startswith("profile: smoke (from PROFILE")


@pytest.mark.parametrize("args, words", [
    (["run", "--profile", "fast"], ["unknown profile 'fast'", "smoke, quick, paper"]),
    (["run", "--profile", "smoke", "-p", "nonsense=1"], ["unknown notebook parameter 'nonsense'"]),
    (["run", "--profile", "smoke", "--only", "99_missing"], ["unknown notebook '99_missing'"]),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, words):
    out = subprocess.run([sys.executable, "-m", "greenlib.pipeline", *args], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for w in words:
        assert w in err

"""Every notebook runs end to end in the smoke profile (CPU), as `make reproduce` runs it."""
import json

import pytest

from greenlib import config, pipeline
from greenlib.paths import results_dir
from greenlib.results import ResultsStore

NOTEBOOKS = pipeline.notebooks()


def test_there_are_notebooks():
    assert [p.stem for p in NOTEBOOKS][:1] == ["00_environment"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_is_committed_without_outputs_and_has_a_valid_parameters_cell(nb):
    cells = json.loads(nb.read_text())["cells"]
    assert all(not c.get("outputs") and not c.get("execution_count") for c in cells if c["cell_type"] == "code")
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    declared = pipeline.declared_parameters(nb)
    assert "profile" in declared
    known = set(pipeline.GLOBAL_PARAMS).union(*(s.keys() for s in config.SECTIONS.values()))
    assert set(declared) <= known, f"{nb.name} declares parameters no config section knows"


# notebooks that only read the store, and a notebook that fills it (when this test runs alone)
READS_STORE = {"20_greeness_analysis": "01_baselines"}


@pytest.mark.notebook
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_profile(nb, tmp_path):
    if nb.stem in READS_STORE and not list(ResultsStore(results_dir("smoke")).runs()):
        (src, params), = pipeline.plan([nb.with_name(READS_STORE[nb.stem] + ".ipynb")], "smoke", {}, redraw=False)
        pipeline.execute(src, tmp_path / src.name, params, progress=False)
    (_, params), = pipeline.plan([nb], "smoke", {}, redraw=False)
    pipeline.execute(nb, tmp_path / nb.name, params, progress=False)
    if "redraw_only" in pipeline.declared_parameters(nb):
        # a second run only redraws from what the first stored
        (_, params), = pipeline.plan([nb], "smoke", {}, redraw=True)
        pipeline.execute(nb, tmp_path / f"redraw-{nb.name}", params, progress=False)

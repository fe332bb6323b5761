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


@pytest.mark.notebook
@pytest.mark.parametrize("nb, more", [("04_distillation", {"methods": ["KD", "CRD", "AT"]}),
                                      ("05_nas", {"search_classes": [100, 10]})])
def test_a_redraw_of_a_store_still_filling_names_what_is_missing_and_draws_the_rest(nb, more, tmp_path):
    # a campaign commits runs as they land: a redraw asked for more than is stored says what is not
    # there yet and draws the rest (a run that computes still insists on every cell)
    path = next(p for p in NOTEBOOKS if p.stem == nb)
    (_, params), = pipeline.plan([path], "smoke", {}, redraw=False)
    pipeline.execute(path, tmp_path / path.name, params, progress=False)  # the profile's own cells (cached)
    (_, params), = pipeline.plan([path], "smoke", more, redraw=True)
    pipeline.execute(path, tmp_path / f"partial-{path.name}", params, progress=False)
    cells = json.loads((tmp_path / f"partial-{path.name}").read_text())["cells"]
    shown = [o.get("data", {}).get("text/markdown", "") for c in cells for o in c.get("outputs", [])]
    text = "".join(m if isinstance(m, str) else "".join(m) for m in shown)
    want = {"04_distillation": "resnet20→resnet8 AT",
            "05_nas": "darts searched on 10 classes, proxyless searched on 10"}[nb]
    assert "**Not stored yet**, " in text and want in text

import json
import warnings

import pandas as pd
import pytest

from greenlib.results import CorruptRunWarning, ResultsStore, run_id

CFG = {"kind": "baseline", "model": "vgg16", "epochs": 2, "seed": 0}
STAGE = {"name": "base_training", "energy_j": 7200.0, "energy_wh": 2.0, "elapsed_s": 10.0,
         "energy_source": "counter", "mean_power_w": 720.0, "estimated": False}


def _finished(store, cfg=CFG, acc=0.5):
    run = store.open(cfg, environment={"hardware": "H100", "gpu_model": "H100"})
    run.save_stage("base_training", STAGE, pd.DataFrame({"t_s": [0.0, 1.0], "power_w": [1.0, 2.0]}))
    run.finish({"acc": acc, "tec_wh": 2.0})
    return run


def test_run_id_is_stable_readable_and_config_sensitive():
    assert run_id(CFG) == run_id(dict(reversed(list(CFG.items()))))
    assert run_id(CFG).startswith("baseline-vgg16-")
    assert run_id(CFG) != run_id({**CFG, "seed": 1})


def test_finished_run_is_a_cache_hit(tmp_path):
    store = ResultsStore(tmp_path)
    run = _finished(store)
    again = store.open(CFG)
    assert again.complete and again.result["metrics"]["acc"] == 0.5
    assert again.folder == run.folder


def test_force_discards_the_result_but_a_new_run_is_incomplete(tmp_path):
    store = ResultsStore(tmp_path)
    _finished(store)
    assert not store.open(CFG, force=True).complete
    assert not store.open({**CFG, "seed": 9}).complete


def test_load_results_is_one_tidy_row_per_complete_run(tmp_path):
    store = ResultsStore(tmp_path)
    _finished(store)
    _finished(store, {**CFG, "seed": 1}, acc=0.6)
    store.open({**CFG, "seed": 2})  # started, never finished: not a result
    df = store.load_results()
    assert len(df) == 2
    assert sorted(df["acc"]) == [0.5, 0.6]
    assert set(df["base_training.energy_wh"]) == {2.0}
    assert set(df["hardware"]) == {"H100"}
    long = store.load_stages()
    assert list(long["stage"]) == ["base_training", "base_training"]
    assert (run := next(store.runs())) and (run.folder / "traces" / "base_training.csv.gz").exists()


@pytest.mark.parametrize("damage", ["truncate_result", "delete_metrics", "edit_config", "garbage_config"])
def test_corrupt_run_folders_are_skipped_with_a_warning(tmp_path, damage):
    store = ResultsStore(tmp_path)
    good = _finished(store)
    bad = _finished(store, {**CFG, "seed": 5})
    if damage == "truncate_result":
        text = (bad.folder / "result.json").read_text()
        (bad.folder / "result.json").write_text(text[: len(text) // 2])
    elif damage == "delete_metrics":
        (bad.folder / "metrics.json").unlink()
    elif damage == "edit_config":
        (bad.folder / "config.json").write_text(json.dumps({**CFG, "seed": 6}))
    else:
        (bad.folder / "config.json").write_text("{not json")
    with pytest.warns(CorruptRunWarning, match=bad.folder.name):
        df = store.load_results()
    assert list(df["run_id"]) == [good.id]


def test_open_refuses_a_folder_holding_another_config(tmp_path):
    store = ResultsStore(tmp_path)
    run = store.open(CFG)
    (run.folder / "config.json").write_text(json.dumps({**CFG, "seed": 3}))
    with pytest.raises(RuntimeError, match="different config"):
        store.open(CFG)


def test_empty_store_gives_an_empty_frame(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ResultsStore(tmp_path / "nothing").load_results().empty


def test_metrics_may_not_shadow_config_keys(tmp_path):
    run = ResultsStore(tmp_path).open(CFG)
    with pytest.raises(ValueError, match=r"\['epochs'\] share names with config keys"):
        run.finish({"epochs": 3})
    assert not run.complete


def test_config_mask_matches_lists_as_tuples_and_none_as_nan():
    import math

    import pandas as pd

    from greenlib.results import config_mask, same_value

    df = pd.DataFrame({"epochs": [2, 2, 3], "milestones": [(0.5, 0.75), (0.5,), (0.5, 0.75)],
                       "pretrain_lr": [None, math.nan, 0.1]})
    assert list(config_mask(df, {"epochs": 2, "milestones": [0.5, 0.75]})) == [True, False, False]
    assert list(config_mask(df, {"pretrain_lr": None})) == [True, True, False]
    assert list(config_mask(df, {"missing_key": 1})) == [False, False, False]
    assert same_value(0.1, 0.1) and not same_value(None, 0.1) and not same_value((1,), 1)

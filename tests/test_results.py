import json
import multiprocessing as mp
import os
import time
import warnings
from types import SimpleNamespace

import pandas as pd
import pytest

from greenlib.results import CorruptRunWarning, LockingStore, ResultsStore, restate_utilisation, run_id

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


def test_a_run_resumed_on_other_machines_keeps_every_environment_it_ran_in(tmp_path):
    # the paper's ResNet56 teacher ran its epochs on three machines: its record names all three
    store = ResultsStore(tmp_path)
    machines = [{"hostname": h, "gpu_model": "H200", "date_utc": d} for h, d in (("a", "t0"), ("b", "t1"), ("c", "t2"))]
    run = store.open(CFG, environment=machines[0])
    run.save_stage("base_training", STAGE)  # then cut off: no result
    store.open(CFG, environment=machines[1])
    run = store.open(CFG, environment=machines[2])
    stored = json.loads((run.folder / "environment.json").read_text())
    assert {k: stored[k] for k in machines[2]} == machines[2]
    assert stored["earlier_environments"] == machines[:2]
    assert run.finish({"acc": 0.5})["environment"]["earlier_environments"] == machines[:2]
    # recomputing from scratch (force) is no resume: the earlier machines are not its history
    rerun = store.open(CFG, environment=machines[0], force=True)
    assert json.loads((rerun.folder / "environment.json").read_text()) == machines[0]


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


@pytest.mark.parametrize("damage", ["delete_metrics", "empty_result", "result_without_metrics"])
def test_one_definition_of_complete_an_incomplete_run_is_named_and_redone(tmp_path, damage):
    store = ResultsStore(tmp_path)
    run = _finished(store)
    if damage == "delete_metrics":
        (run.folder / "metrics.json").unlink()
    elif damage == "empty_result":
        (run.folder / "result.json").write_text("{}")
    else:
        res = json.loads((run.folder / "result.json").read_text())
        del res["metrics"]
        (run.folder / "result.json").write_text(json.dumps(res))
    assert not run.complete  # the cache's answer is the collector's
    with pytest.warns(CorruptRunWarning):
        assert store.load_results().empty
    assert list(store.incomplete()) == [run.id]
    with pytest.warns(CorruptRunWarning, match=f"run {run.id} was stored incomplete"):
        again = store.open(CFG, environment={"hardware": "H100"})
    assert not again.complete and not (run.folder / "result.json").exists()  # recomputed, not a cache hit
    assert store.incomplete() == {}
    with pytest.raises(FileNotFoundError, match="not complete"):
        again.result
    again.finish({"acc": 0.7, "tec_wh": 2.0})
    assert list(store.load_results()["acc"]) == [0.7]


# -- the locking store -----------------------------------------------------------------------------

def _compute(root, hold_s, log_path):
    store = LockingStore(root, log=lambda m: None)
    run = store.open({"kind": "toy", "model": "m"})
    if run.complete:
        with open(log_path, "a") as f:
            f.write(f"hit {time.time()}\n")
        return
    with open(log_path, "a") as f:
        f.write(f"compute {time.time()}\n")
    time.sleep(hold_s)
    run.finish({"x": 1.0})


def _die_holding(root):
    store = LockingStore(root, log=lambda m: None)
    store.open({"kind": "toy", "model": "m"})
    os._exit(0)  # killed while computing: the lock must go with the process


def _write_other(root, i):
    run = ResultsStore(root).open({"kind": "toy", "model": f"m{i}"}, environment={"pid": os.getpid()})
    run.save_stage("s", {"energy_j": float(i)})
    run.finish({"x": float(i)})


def test_a_run_two_processes_want_is_computed_once(tmp_path):
    ctx = mp.get_context("fork")
    log = tmp_path / "log.txt"
    a = ctx.Process(target=_compute, args=(tmp_path, 1.0, log))
    a.start()
    time.sleep(0.3)
    b = ctx.Process(target=_compute, args=(tmp_path, 0.0, log))
    b.start()
    a.join(20)
    b.join(20)
    events = [ln.split() for ln in log.read_text().splitlines()]
    assert [e[0] for e in events] == ["compute", "hit"]  # b waited for a, then read its result
    assert float(events[1][1]) >= float(events[0][1]) + 1.0
    assert not list((tmp_path / ".locks").iterdir())  # released and removed


def test_a_dead_holder_leaves_no_lock_and_one_process_reenters(tmp_path):
    p = mp.get_context("fork").Process(target=_die_holding, args=(tmp_path,))
    p.start()
    p.join(20)
    store = LockingStore(tmp_path, log=lambda m: None)
    t0 = time.time()
    run = store.open({"kind": "toy", "model": "m"})
    assert time.time() - t0 < 2 and not run.complete and store.held() == [run.id]
    assert store.open({"kind": "toy", "model": "m"}).id == run.id  # the same process does not wait for itself
    run.finish({"x": 1.0})
    assert store.held() == []


def test_processes_writing_different_runs_at_once_all_land(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_write_other, args=(tmp_path, i)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    runs = {r.config["model"]: r.result for r in ResultsStore(tmp_path).runs()}
    assert sorted(runs) == [f"m{i}" for i in range(6)]
    assert all(runs[f"m{i}"]["metrics"]["x"] == i for i in range(6))


def _prepare_and_compute(root, hold_s, log_path, monkey):
    # what a notebook does: experiments.prepare, then a run function's open/finish
    from greenlib import config, experiments

    monkey()
    ctx = experiments.prepare(config.resolve("baselines", profile="smoke"))
    run = ctx.store.open({"kind": "toy", "model": "m"})
    with open(log_path, "a") as f:
        f.write(f"{'hit' if run.complete else 'compute'} {time.time()}\n")
    if not run.complete:
        time.sleep(hold_s)
        run.finish({"x": 1.0})


def _tiny_prepare(root):
    def patch():
        from greenlib import experiments

        os.environ["GREENLIB_DATA"] = str(root)
        fake = SimpleNamespace(name="fake", description="fake", num_classes=10)
        fake.subset = lambda *a: fake
        fake.record = lambda: {"name": "fake"}
        experiments.load_dataset = lambda *a, **k: fake
        experiments.envmod.environment = lambda: {}
    return patch


def test_runs_started_from_notebooks_take_the_per_run_lock(tmp_path):
    # two notebooks on one profile (two processes through experiments.prepare) want the same run
    from greenlib.paths import results_dir

    ctx = mp.get_context("fork")
    log = tmp_path / "log.txt"
    a = ctx.Process(target=_prepare_and_compute, args=(tmp_path, 1.0, log, _tiny_prepare(tmp_path)))
    a.start()
    time.sleep(0.5)
    b = ctx.Process(target=_prepare_and_compute, args=(tmp_path, 0.0, log, _tiny_prepare(tmp_path)))
    b.start()
    a.join(30)
    b.join(30)
    events = [ln.split() for ln in log.read_text().splitlines()]
    assert [e[0] for e in events] == ["compute", "hit"]  # the second waited, then reused the run
    store = ResultsStore(tmp_path / "results" / "smoke")
    assert [r.config["model"] for r in store.runs()] == ["m"]


def test_restating_utilisation_leaves_out_the_driver_period_before_each_window(tmp_path):
    # a trace whose GPU idles until 1.0 s and trains from then on: the driver's readings say 0% until
    # 1.2 s (its 0.2 s period before the window), so the stored means (as traced before) are too low
    t = [round(0.01 * i, 2) for i in range(300)]
    util = [100.0 if x >= 1.2 else 0.0 for x in t]
    trace = pd.DataFrame({"t_s": t, "gpu": 0, "valid": True, "power_w": 200.0, "gpu_util_pct": util,
                          "mem_util_pct": [u / 2 for u in util]})
    raw = trace[(trace.t_s >= 1.0) & (trace.t_s <= 2.0)].gpu_util_pct.mean()
    epoch = {"epoch": 0, "window.start_s": 1.0, "window.end_s": 2.0, "window.elapsed_s": 1.0,
             "window.mean_gpu_util_pct": raw}
    train = {"name": "base_training", "energy_source": "counter", "energy_j": 200.0, "elapsed_s": 1.0,
             "mean_gpu_util_pct": raw, "graph_captured": True, "epochs": [epoch]}
    infer = {"name": "inference", "energy_source": "counter", "start_s": 1.0, "end_s": 2.0, "mean_gpu_util_pct": raw}
    on_cpu = {"name": "calibration", "energy_source": "cpu-estimate", "start_s": 1.0, "end_s": 2.0,
              "mean_gpu_util_pct": raw}
    store = ResultsStore(tmp_path)
    base = store.open({"kind": "baseline", "model": "m"})
    base.save_stage("base_training", train, trace)
    base.save_stage("inference", infer, trace)
    base.save_stage("calibration", on_cpu, trace)
    base.finish({"acc": 0.5})
    pruned = store.open({"kind": "pruning", "model": "m"})
    pruned.save_stage("base_training", {**train, "reused_from": base.id})  # a copy, without its trace
    pruned.finish({"acc": 0.4})
    assert raw < 81

    changed = restate_utilisation(tmp_path)
    assert changed == sorted([f"{base.id}/base_training", f"{base.id}/inference", f"{pruned.id}/base_training"])
    for run in (base, pruned):
        res = json.loads((run.folder / "result.json").read_text())
        st = res["stages"]["base_training"]
        assert st["mean_gpu_util_pct"] == 100.0 and st["mean_mem_util_pct"] == 50.0 and st["util_lag_s"] == 0.2
        assert st["epochs"][0]["window.mean_gpu_util_pct"] == 100.0 and st["energy_j"] == 200.0
        assert run.stage("base_training") == st  # stages/ and result.json agree
    assert base.stage("inference")["mean_gpu_util_pct"] == 100.0
    assert base.stage("calibration")["mean_gpu_util_pct"] == raw  # not an NVIDIA source: as measured
    assert restate_utilisation(tmp_path) == []  # once only
    assert len(store.load_results()) == 2  # the runs stay complete

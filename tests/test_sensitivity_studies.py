"""Notebooks 10 and 12: the KD job at several batch sizes and per GPU type, and their summaries."""
import math

import pandas as pd
import pytest

from greenlib import config, experiments, paper, report, sensitivity
from greenlib.config import ConfigError

PAIR = "resnet20:resnet8"


def _cfg(section="batch_size", **kw):
    base = dict(train_size=64, test_size=32, iec_batch_size=16, iec_min_seconds=0.05, teacher_epochs=1,
                student_epochs=2)
    if section == "batch_size":
        base |= dict(pairs=[PAIR], batch_sizes=[32, 16], batch_size=32)
    else:
        base |= dict(pair=PAIR, batch_size=32)
    return config.resolve(section, profile="smoke", **(base | kw))


@pytest.fixture(scope="module")
def study():
    cfg = _cfg()
    ctx = experiments.prepare(cfg)
    results = sensitivity.run_batch_size_study(ctx, seed=0, progress=False)
    return cfg, ctx, results


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, match", [
    ([], "is empty"),
    ([16, 0], "has 0"),
    ([16, 65], "has 65"),
    ([16, "32"], "has '32'"),
    ([16, 16], "repeats"),
])
def test_bad_batch_sizes_name_the_value(sizes, match):
    with pytest.raises(ConfigError, match=match):
        sensitivity.check_batch_sizes(_cfg(batch_sizes=sizes))


def test_bad_pair_is_a_config_error_before_anything_runs():
    cfg = _cfg(pairs=["resnet20-resnet8"])
    with pytest.raises(ConfigError, match="resnet20-resnet8"):
        sensitivity.run_batch_size_study(experiments.prepare(cfg), progress=False)


def test_linear_lr_scaling_scales_from_batch_64():
    assert sensitivity.study_lr(_cfg(lr=0.05, lr_scaling="fixed"), 256) == 0.05
    assert sensitivity.study_lr(_cfg(lr=0.05, lr_scaling="linear"), 256) == pytest.approx(0.2)
    assert sensitivity.distillation_params(_cfg(lr=0.05, lr_scaling="linear"), PAIR, 16).lr == pytest.approx(0.0125)


# --- the batch-size study end to end ------------------------------------------------------------

def test_one_distillation_run_per_batch_size_sharing_one_teacher(study):
    cfg, ctx, results = study
    sizes = sorted(r["config"]["batch_size"] for r in results)
    assert sizes == [16, 32]
    teachers = {r["config"]["teacher_run_id"] for r in results}
    assert len(teachers) == 1
    teacher = ctx.store.get(teachers.pop()).result
    # RepDistiller's teacher recipe, batch 64 whatever the study's batch (32 here)
    assert teacher["config"]["kind"] == "teacher" and teacher["config"]["batch_size"] == 64 != cfg.batch_size
    for r in results:  # TEC counts the shared teacher in full
        m = r["metrics"]
        assert m["tec_wh"] == pytest.approx(m["tec_teacher_wh"] + m["tec_pretrain_wh"] + m["tec_distill_wh"])


def test_second_call_is_a_cache_hit(study, monkeypatch):
    cfg, ctx, results = study

    def boom(*a, **k):
        raise AssertionError("a stored run was trained again")

    monkeypatch.setattr(experiments, "train_and_measure", boom)
    monkeypatch.setattr("greenlib.distill.run._distill_and_measure", boom)
    again = sensitivity.run_batch_size_study(ctx, seed=0, progress=False)
    assert [r["run_id"] for r in again] == [r["run_id"] for r in results]


def test_epoch_table_reads_every_epoch_of_every_run(study):
    cfg, ctx, results = study
    runs = sensitivity.stored_jobs(cfg, list(cfg.pairs), sensitivity.check_batch_sizes(cfg))
    assert sorted(runs.run_id) == sorted(r["run_id"] for r in results)
    epochs = sensitivity.epoch_table(runs, ctx.store)
    assert len(epochs) == 2 * cfg.student_epochs
    assert epochs.batch_size.dtype.kind == "i"
    for r in results:  # the epochs' energy adds up to the stage's
        part = epochs[epochs.run_id == r["run_id"]]
        assert part.energy_j.sum() == pytest.approx(r["stages"]["distillation"]["energy_j"], rel=1e-9)
        assert list(part.epoch) == [0, 1]
    summary = sensitivity.per_epoch_summary(epochs, ["pair", "batch_size"])
    assert list(summary.batch_size) == [16, 32] and (summary.epochs_averaged == 1).all()


def test_epoch_table_names_a_missing_stage(study):
    cfg, ctx, results = study
    runs = pd.DataFrame([{"run_id": results[0]["config"]["teacher_run_id"]}])
    with pytest.raises(KeyError, match="no stage 'distillation'"):
        sensitivity.epoch_table(runs, ctx.store)


def test_gpu_type_job_is_the_same_run_as_the_study_at_its_batch_size(study):
    # same job, same teacher (RepDistiller's recipe): one run, not two
    cfg, ctx, results = study
    gcfg = _cfg("gpu_type")
    job = sensitivity.run_gpu_type_job(experiments.Context(gcfg, ctx.device, ctx.dataset, ctx.store,
                                                           ctx.environment), progress=False)
    same = [r for r in results if r["config"]["batch_size"] == 32]
    assert job["run_id"] == same[0]["run_id"]
    assert len(sensitivity.stored_jobs(gcfg, [gcfg.pair], [None])) == 1


# --- summaries on hand-made numbers -------------------------------------------------------------

def _epochs(rows):
    df = pd.DataFrame(rows, columns=["pair", "batch_size", "epoch", "elapsed_s", "energy_j", "mean_power_w",
                                     "gpu_util_pct", "mem_util_pct", "max_mem_used_mib", "train_acc", "images"])
    df["energy_wh"] = df.energy_j / 3600
    return df


def test_per_epoch_summary_skips_the_first_epoch_and_time_weights_means():
    df = _epochs([("p", 32, 0, 10.0, 3600.0, 300.0, 10.0, 5.0, 100.0, 0.1, 100),
                  ("p", 32, 1, 1.0, 360.0, 100.0, 50.0, 20.0, 200.0, 0.2, 100),
                  ("p", 32, 2, 3.0, 1080.0, 200.0, 90.0, 40.0, 150.0, 0.3, 100)])
    s = sensitivity.per_epoch_summary(df, ["pair", "batch_size"]).iloc[0]
    assert s.epochs_averaged == 2
    assert s.elapsed_s_per_epoch == pytest.approx(2.0)
    assert s.energy_wh_per_epoch == pytest.approx((0.1 + 0.3) / 2)
    assert s.mean_power_w == pytest.approx((100 * 1 + 200 * 3) / 4)
    assert s.gpu_util_pct == pytest.approx((50 * 1 + 90 * 3) / 4)
    assert s.max_mem_used_mib == 200.0 and s.images_per_s == pytest.approx(200 / 4)
    whole = sensitivity.per_epoch_summary(df, ["pair"], skip_first=False).iloc[0]
    assert whole.epochs_averaged == 3 and whole.elapsed_s_per_epoch == pytest.approx(14 / 3)


def test_energy_to_accuracy_uses_the_lowest_final_accuracy_as_target():
    df = _epochs([("p", 32, 0, 1.0, 3600.0, 0, 0, 0, 0, 0.30, 1), ("p", 32, 1, 1.0, 3600.0, 0, 0, 0, 0, 0.50, 1),
                  ("p", 64, 0, 1.0, 1800.0, 0, 0, 0, 0, 0.10, 1), ("p", 64, 1, 1.0, 1800.0, 0, 0, 0, 0, 0.40, 1)])
    out = sensitivity.energy_to_accuracy(df, ["pair", "batch_size"], within=["pair"]).set_index("batch_size")
    assert (out.target_train_acc == 0.40).all()
    assert out.loc[32, "epochs_to_target"] == 2 and out.loc[32, "energy_wh_to_target"] == pytest.approx(2.0)
    assert out.loc[64, "epochs_to_target"] == 2 and out.loc[64, "energy_wh_to_target"] == pytest.approx(1.0)


def _summary(energies):
    return pd.DataFrame({"pair": "p", "hardware": "gpu", "batch_size": list(energies),
                         "energy_wh_per_epoch": list(energies.values())})


def test_batch_size_findings_test_the_papers_claim():
    holds = sensitivity.batch_size_findings(_summary({32: 4.0, 128: 2.0, 256: 1.0, 1024: 0.98})).iloc[0]
    assert holds.verdict == "holds" and holds.least_energy_batch == 1024
    assert holds.change_to_knee_pct == pytest.approx(-75.0) and holds.best_change_past_knee_pct == pytest.approx(-2.0)
    fails = sensitivity.batch_size_findings(_summary({32: 4.0, 256: 2.0, 1024: 1.0})).iloc[0]
    assert fails.verdict == "does not hold" and fails.best_change_past_knee_pct == pytest.approx(-50.0)
    short = sensitivity.batch_size_findings(_summary({32: 4.0, 64: 2.0})).iloc[0]
    assert short.verdict == "untested" and math.isnan(short.change_to_knee_pct) and short.least_energy_batch == 64


def test_gpu_type_table_puts_ours_beside_the_papers_rows():
    summary = pd.DataFrame([{"hardware": "NVIDIA H100", "gpu_util_pct": 90.0, "mem_util_pct": 30.0,
                             "mean_power_w": 360.0, "elapsed_s_per_epoch": 10.0, "energy_wh_per_epoch": 1.0}])
    t = sensitivity.gpu_type_table(summary, paper.load_table4())
    assert list(t.source) == ["measured", "paper", "paper", "paper"]
    assert t.iloc[0].gpu == "NVIDIA H100" and t.iloc[0].implied_energy_wh == pytest.approx(1.0)
    p100 = t[t.gpu == "NVIDIA TESLA P100"].iloc[0]
    assert p100.implied_energy_wh == pytest.approx(133.76 * 38.83 / 3600)


def test_slug_is_file_name_safe():
    assert report.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert report.slug("CPU (AMD EPYC)") == "cpu-amd-epyc"
    with pytest.raises(ValueError, match="no letters"):
        report.slug(" -- ")


# --- Figure 5 (notebook 11): each series' mean over the training window, time-weighted -----------

def _trace(t, p, start_s, end_s):
    from greenlib.tracer import SavedTrace
    from greenlib.tracer.summary import summarize

    samples = pd.DataFrame({"t_s": t, "gpu": 0, "valid": True, "power_w": p, "power_instant_w": p})
    w = summarize(samples, "load", start_s, end_s, requested_interval_s=0.1, sampled_label="smi", labels=[0])
    return SavedTrace(samples, {"load": w}, {"requested_interval_s": 0.1})


def test_figure5_means_cover_the_training_window_only_and_are_time_weighted():
    import numpy as np

    # idle 50 W for 3 s, training 10 s (dense 0.05 s samples at 100 W for 5 s, sparse 0.5 s at 300 W for
    # 5 s: a counter would read 200 W on average), idle again for 3 s
    t = np.concatenate([np.arange(0, 3, 0.1), np.arange(3, 8, 0.05), np.arange(8, 13, 0.5), np.arange(13, 16, 0.1)])
    p = np.where(t < 3, 50.0, np.where(t < 8, 100.0, np.where(t < 13, 300.0, 50.0)))
    traces = {"smi-0.1s": _trace(t, p, 3.0, 13.0), "smi-1s": _trace(t[::10], p[::10], 3.0, 13.0)}
    means = sensitivity.window_means(traces, reference_w=200.0).set_index("series")
    assert means.loc["smi-0.1s", "window_s"] == 10.0 and means.loc["smi-0.1s", "column"] == "power_instant_w"
    assert means.loc["smi-0.1s", "mean_power_w"] == pytest.approx(200.0, rel=0.03)  # not the sample mean
    assert abs(means.loc["smi-0.1s", "rel_err_pct"]) < 3
    assert means.loc["smi-0.1s", "all_samples_mean_w"] < 150  # what the figure drew before: idle and bias
    # the figure: time from the window's start, and every line in the legend
    import matplotlib.pyplot as plt

    from greenlib import plotting

    fig = plotting.plot_power_series({k: v.samples for k, v in traces.items()}, means.reset_index(),
                                     reference_w=200.0, title="t")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert len(labels) == 1 + 2 * len(traces) + 1  # window, (series + its mean) per series, counter
    assert any("smi-0.1s: mean over the window" in s and "W" in s for s in labels)
    assert any(s.startswith("energy counter") for s in labels)
    plt.close(fig)

"""Scale-out on the CPU: the grid through submitit's local executor, DDP with gloo.

Tiny configs (profile smoke, resnet8, 64 training images, one epoch): every job is a real process
started by submitit, every DDP rank a real process started by torchrun.
"""
from __future__ import annotations

import contextlib
import json
import math
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pandas as pd
import pytest
import torch
from torch import nn

from greenlib import config, experiments
from greenlib.results import ResultsStore, flatten_result, run_id
from greenlib.scaleout import cells as cellmod
from greenlib.scaleout import grid
from greenlib.scaleout.ddp import DDPTrainer, RankShard, combine_devices, device_key
from greenlib.scaleout.ddp import main as ddp_main
from greenlib.tracer import NvmlDevices, Tracer
from greenlib.train import TrainConfig
from test_train import Batches, Interrupt  # the same tiny loader that dies mid-epoch

REPO = Path(__file__).resolve().parent.parent
TINY = {"models": ["resnet8"], "train_size": 64, "test_size": 32, "batch_size": 32, "iec_batch_size": 16,
        "iec_min_seconds": 0.05, "epochs": 1}


def _alive_in_group(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that still run (zombies waiting to be reaped do not count)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _complete(root: Path) -> dict[str, float]:
    """run id -> mtime of result.json, for every complete run under ``root``."""
    return {p.parent.name: p.stat().st_mtime for p in root.glob("*/result.json")}


# -- planning --------------------------------------------------------------------------------------

def test_bad_input_is_one_line_error_before_anything_runs(tmp_path, capsys):
    with pytest.raises(config.ConfigError, match=r"baselines.models: 'resnet9' is not accepted; accepted: vgg8"):
        grid.make_plan([("baselines", {"models": ["resnet9"]})], "smoke", tmp_path)
    with pytest.raises(config.ConfigError, match=r"section 'batch_size' cannot be run as a grid; accepted: "
                                                 r"baselines, pruning, quantization, distillation, nas$"):
        grid.make_plan([("batch_size", {})], "smoke", tmp_path)
    with pytest.raises(config.ConfigError, match=r"unknown profile 'fast'; accepted: smoke, quick, paper"):
        grid.make_plan([("baselines", {})], "fast", tmp_path)
    with pytest.raises(ValueError, match=r"unknown distiller 'KDD'|'KDD'"):
        grid.make_plan([("distillation", {"methods": ["KDD"]})], "smoke", tmp_path)
    # the command line: exit 2, one line, no job folder, no store
    logs = tmp_path / "logs"
    rc = grid.main(["--profile", "smoke", "--section", "pruning", "-p", "pruners=['l9']", "--workers", "1",
                    "--store", str(tmp_path / "store"), "--log-dir", str(logs)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: pruning.pruners: 'l9' is not accepted; accepted: l1, l2, fpgm, apoz, taylor, "
                               "activation_mean"]
    assert not logs.exists() and not (tmp_path / "store").exists()
    assert grid.main(["--profile", "smoke", "--section", "baselines", "--executor", "cloud", "--store",
                      str(tmp_path / "store")]) == 2
    assert "executor 'cloud' is not accepted; accepted: local, slurm" in capsys.readouterr().err


def test_shared_runs_go_first_and_are_the_runs_the_families_reuse(tmp_path):
    plan = grid.make_plan([("pruning", {"models": ["resnet8", "vgg8"], "pruners": ["l1", "fpgm"], "seeds": [0]}),
                           ("baselines", {"models": ["vgg8"], "epochs": 2, "seeds": [0]})], "smoke", tmp_path,
                          hardware=["cpu"])
    first, second = plan.waves
    assert [c.label for c in first] == ["baseline resnet8 seed=0", "baseline vgg8 seed=0"]
    assert len(second) == 4 and all(c.kind == "pruning" for c in second)  # the explicit vgg8 baseline is shared
    assert plan.needs[second[0]] == [first[0]]
    # the base cell is exactly the run experiments.base_model trains (same id, on the CPU)
    cfg = second[0].resolve()
    ctx = SimpleNamespace(cfg=cfg, device=torch.device("cpu"))
    want = experiments.base_run_id(ctx, "resnet8", 0, cfg.base_epochs)
    assert run_id({**cellmod.selector(first[0]), "hardware": "cpu"}) == want
    # distillation needs its teacher and (iec_shared) its student's IEC run first
    plan = grid.make_plan([("distillation", {"methods": ["KD", "AT"]})], "smoke", tmp_path)
    assert [c.label for c in plan.waves[0]] == ["teacher resnet20 seed=0", "iec resnet8 seed=0"]
    # the teacher cell is exactly the run distill.run_teacher trains (same id)
    from greenlib.distill import teacher_run_id
    tcell = plan.waves[0][0]
    tctx = SimpleNamespace(cfg=tcell.resolve(), device=torch.device("cpu"))
    assert run_id({**cellmod.selector(tcell), "hardware": "cpu"}) == teacher_run_id(tctx, "resnet20", 0)
    assert plan.done == {} and plan.hardware is None  # nothing checked without a hardware name


# -- the grid through submitit's local executor ----------------------------------------------------

@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """A grid of three cells (two runs, one that fails at run time on a CPU: a GPU energy source),
    killed after its first run finished, then run again."""
    root = tmp_path_factory.mktemp("grid")
    store = root / "store"
    entries = [("baselines", {**TINY, "seeds": [0, 1]}),
               ("baselines", {**TINY, "seeds": [0], "energy_source": "nvml"})]
    grid_file = root / "grid.json"
    grid_file.write_text(json.dumps([{"section": s, "params": p} for s, p in entries]))
    argv = [sys.executable, "-m", "greenlib.scaleout.grid", "--profile", "smoke", "--grid", str(grid_file),
            "--workers", "1", "--gpus", "0", "--store", str(store), "--log-dir", str(root / "logs1")]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: the driver and every job
    left = None
    try:
        deadline = time.time() + 90
        while not _complete(store) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # stop the driver (as kill or a batch system would) mid-grid
        rc = proc.wait(30)
        t_end = time.time() + 10  # SIGKILL is delivered at once, but a process takes a moment to end
        while (left := _alive_in_group(proc.pid)) and time.time() < t_end:
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = _complete(store)
    lines: list[str] = []
    report = grid.run_grid(entries, "smoke", executor="local", gpus=0, workers=2, store_root=store, log_dir=root / "logs2",
                           poll_s=0.2, log=lines.append)
    return SimpleNamespace(root=root, store=store, finished=finished, report=report, lines=lines, rc=rc, left=left)


def _by_label(report):
    return {o.cell.label + (" nvml" if o.cell.params.get("energy_source") == "nvml" else ""): o
            for o in report.outcomes}


def test_killed_grid_resumes_without_redoing_finished_runs(grid_run):
    assert grid_run.rc == 130 and grid_run.left == []  # the stopped driver took its running job down
    assert len(grid_run.finished) == 1, grid_run.finished  # stopped after one of its two runs
    status = {o.run_id: o.status for o in grid_run.report.outcomes if o.run_id}
    (first,) = grid_run.finished
    assert status == {first: "skipped", **{rid: "done" for rid in status if rid != first}} and len(status) == 2
    after = _complete(grid_run.store)
    assert len(after) == 2 and after[first] == grid_run.finished[first]  # the finished run was not touched


def test_grid_runs_land_in_the_store(grid_run):
    o = _by_label(grid_run.report)
    done = [o["baseline resnet8 seed=0"], o["baseline resnet8 seed=1"]]
    stored = {r.id: r.result for r in ResultsStore(grid_run.store).runs()}
    assert sorted(stored) == sorted(x.run_id for x in done)
    for res in stored.values():
        assert res["config"]["model"] == "resnet8" and res["config"]["hardware"] == "cpu"
        assert res["metrics"]["tec_j"] > 0 and "base_training" in res["stages"]
        assert res["environment"]["launcher"]["submitit_executor"] == "local"
    ran = [x for x in done if x.status == "done"]
    assert ran and all(x.info["cuda_visible_devices"] == "" for x in ran)  # a CPU slot's job sees no GPU
    counts = json.loads((grid_run.root / "logs2" / "report.json").read_text())["counts"]
    assert counts == {"skipped": 1, "done": 1, "failed": 1}


def test_a_failing_cell_is_reported_with_its_config_and_the_others_go_on(grid_run):
    (o,) = grid_run.report.failed
    assert o.status == "failed" and o.cell.params["energy_source"] == "nvml"
    assert o.error.startswith("ValueError: energy_source='nvml' measures a GPU, but the work runs on device='cpu'")
    assert '"energy_source":"nvml"' in o.cell.describe() and "profile=smoke" in o.cell.describe()
    assert o.log and "energy_source='nvml' measures a GPU" in Path(o.log).read_text()
    assert any("failed" in ln and "parameters:" in ln and "energy_source" in ln for ln in grid_run.lines)
    assert _by_label(grid_run.report)["baseline resnet8 seed=1"].status == "done"  # ran beside it, unharmed


class _FakeJob:
    """Done after ``polls`` checks; raises (as a failed submitit job reports) when ``fail``."""

    def __init__(self, cell, slot, polls, fail, log):
        self.cell, self.slot, self.polls, self.fail, self.job_id = cell, slot, polls, fail, str(len(log))
        log.append(("start", slot.name, cell.args))

    def done(self):
        self.polls -= 1
        return self.polls < 0

    def exception(self):
        return RuntimeError("Job failed:\n----------------------\nTraceback\nKeyError: 'boom'\n"
                            "----------------------\n") if self.fail else None

    def result(self):
        return {"run_id": f"r{self.cell.args[1]}", "status": "done"}

    def cancel(self):
        pass


def test_one_job_per_slot_at_a_time_and_a_failure_stops_nothing(monkeypatch):
    cells = grid.make_plan([("baselines", {**TINY, "seeds": list(range(7))})], "smoke", "/nonexistent").cells
    events, busy, outcomes = [], {}, []

    def submit(executor, slot, cell, store_root, timeout_min, weights_only=False):
        assert slot.name not in busy, f"{slot.name} got a second job"
        busy[slot.name] = cell
        return _FakeJob(cell, slot, polls=cell.args[1] % 3, fail=cell.args[1] == 2, log=events)

    def record(o):
        busy.pop(o.slot)
        outcomes.append(o)

    monkeypatch.setattr(grid, "_submit_local", submit)
    slots = [grid.Slot("gpu0", 0, "H"), grid.Slot("gpu1", 1, "H")]
    grid._dispatch_local(cells, slots, None, Path("/s"), 60, lambda s: None, 0.0, record)
    assert sorted(o.cell.args[1] for o in outcomes) == list(range(7))
    failed = [o for o in outcomes if o.status == "failed"]
    assert [o.cell.args[1] for o in failed] == [2] and failed[0].error == "KeyError: 'boom'"
    assert {e[1] for e in events} == {"gpu0", "gpu1"}


def test_a_cpu_measured_cell_runs_with_no_other_job_beside_it(monkeypatch):
    # PyTorch int8's IEC is the host's CPU time: a training job beside it once made it 14x costlier
    plan = grid.make_plan([("quantization", {"models": ["resnet8"], "precisions": ["fp16", "int8"], "seeds": [0, 1]}),
                           ("baselines", {**TINY, "seeds": [2, 3, 4, 5]})], "smoke", "/nonexistent")
    assert {c.label for c in plan.cells if cellmod.runs_alone(c)} == {"quantization resnet8 int8 seed=0",
                                                                     "quantization resnet8 int8 seed=1"}
    events, running = [], set()

    def submit(executor, slot, cell, store_root, timeout_min, weights_only=False):
        running.add(cell)
        others = running - {cell}
        events.append((cell.label, sorted(c.label for c in others)))
        job = _FakeJob(cell, slot, polls=2, fail=False, log=[])
        done = job.done
        job.done = lambda: done() and (running.discard(cell) or True)
        return job

    monkeypatch.setattr(grid, "_submit_local", submit)
    outcomes = []
    slots = [grid.Slot("gpu0", 0, "H"), grid.Slot("gpu1", 1, "H")]
    grid._dispatch_local(plan.cells, slots, None, Path("/s"), 60, lambda s: None, 0.0, outcomes.append, plan.needs)
    assert len(outcomes) == len(plan.cells) == 10
    started = [label for label, _ in events]
    for label, beside in events:  # nothing was running when an int8 job started, and nothing started beside one
        assert not ("int8" in label and beside), (label, beside)
        assert not any("int8" in b for b in beside), (label, beside)
    assert sum(len(b) > 0 for _, b in events) >= 3  # the other cells did share the two slots
    assert started.index("quantization resnet8 int8 seed=0") > started.index("quantization resnet8 fp16 seed=0")

def _fake_grid(monkeypatch, polls, fails=()):
    """run_grid's local path with jobs faked: a job of label L is done after ``polls[L]`` checks
    (default 0) and fails when L is in ``fails``; returns the start/finish events in order."""
    events, busy = [], {}

    class Job:
        def __init__(self, cell, slot):
            self.cell, self.slot, self.left, self.job_id = cell, slot, polls.get(cell.label, 0), str(len(events))
            events.append(("start", cell.label, slot.name))

        def done(self):
            self.left -= 1
            if self.left < 0 and self.cell.label in busy.values():
                busy.pop(self.slot.name)
                events.append(("end", self.cell.label, self.slot.name))
            return self.left < 0

        def exception(self):
            return RuntimeError("Job failed:\n----------------------\nTraceback\nRuntimeError: out of memory\n"
                                "----------------------\n") if self.cell.label in fails else None

        def result(self):
            return {"run_id": "r", "status": "weights" if self.weights_only else "done"}

    def submit(executor, slot, cell, store_root, timeout_min, weights_only=False):
        assert slot.name not in busy, f"{slot.name} got a second job"
        busy[slot.name] = cell.label
        job = Job(cell, slot)
        job.weights_only = weights_only
        events[-1] += (weights_only,)
        return job

    monkeypatch.setattr(grid, "_submit_local", submit)
    monkeypatch.setattr(grid, "_local_executor", lambda folder: None)
    monkeypatch.setattr(grid, "local_slots", lambda gpus, workers: [grid.Slot("gpu0", 0, "H"), grid.Slot("gpu1", 1, "H")])
    return events


def test_cells_whose_shared_run_failed_are_blocked_not_run(tmp_path, monkeypatch):
    events = _fake_grid(monkeypatch, {}, fails={"baseline resnet8 seed=0"})
    lines = []
    report = grid.run_grid([("pruning", {"models": ["resnet8", "vgg8"], "pruners": ["l1"]})], "smoke",
                           gpus=2, store_root=tmp_path / "s", log_dir=tmp_path / "l", poll_s=0.0, log=lines.append)
    status = {o.cell.label: (o.status, o.error) for o in report.outcomes}
    assert status["pruning resnet8 l1 seed=0"] == ("blocked", "needs baseline resnet8 seed=0, which failed")
    assert status["baseline resnet8 seed=0"] == ("failed", "RuntimeError: out of memory")
    assert status["pruning vgg8 l1 seed=0"][0] == "done"
    started = [e[1] for e in events if e[0] == "start"]
    assert "pruning resnet8 l1 seed=0" not in started
    assert started.index("baseline vgg8 seed=0") < started.index("pruning vgg8 l1 seed=0")
    assert any("blocked" in ln and "which failed" in ln for ln in lines)


def test_a_cell_starts_when_its_own_shared_run_is_done_not_the_whole_first_wave(tmp_path, monkeypatch):
    # the vgg8 base model is quick, the resnet8 one slow: the vgg8 pruning cells take the GPU the vgg8
    # base model leaves, while the other GPU still trains resnet8; resnet8's cell waits for its own base
    events = _fake_grid(monkeypatch, {"baseline resnet8 seed=0": 12, "baseline vgg8 seed=0": 1})
    report = grid.run_grid([("pruning", {"models": ["resnet8", "vgg8"], "pruners": ["l1", "fpgm"]})], "smoke",
                           gpus=2, store_root=tmp_path / "s", log_dir=tmp_path / "l", poll_s=0.0, log=lambda s: None)
    assert report.counts() == {"done": 6}
    order = [(e[0], e[1]) for e in events]
    slow_end = order.index(("end", "baseline resnet8 seed=0"))
    assert order.index(("start", "pruning vgg8 l1 seed=0")) < slow_end
    assert order.index(("start", "pruning vgg8 fpgm seed=0")) < slow_end
    assert order.index(("start", "pruning resnet8 l1 seed=0")) > slow_end
    assert order.index(("start", "pruning resnet8 fpgm seed=0")) > slow_end


def test_a_shared_run_whose_weights_are_gone_is_trained_once_for_them_before_its_cells(tmp_path, monkeypatch):
    # a new machine: the resnet8 base run is complete in the committed store, its weights are not
    entries = [("pruning", {"models": ["resnet8", "vgg8"], "pruners": ["l1", "fpgm"]})]
    base = grid.make_plan(entries, "smoke", tmp_path / "s").waves[0][0]
    assert base.label == "baseline resnet8 seed=0"
    run = ResultsStore(tmp_path / "s").open({**cellmod.selector(base), "hardware": "cpu"})  # smoke runs on the CPU
    run.finish({"acc": 0.5}, {})
    plan = grid.make_plan(entries, "smoke", tmp_path / "s", hardware=["H"])
    assert plan.regenerate == [base] and base in plan.to_run()
    assert "complete (" + run.id + "), weights gone: trained again first\n" in plan.describe() + "\n"
    (run.folder / "regenerate_checkpoint.pt").write_bytes(b"carried from the session that ran out")
    assert "weights gone: trained again first (resumed from its checkpoint)" in plan.describe()

    events = _fake_grid(monkeypatch, {"baseline resnet8 seed=0": 3})
    report = grid.run_grid(entries, "smoke", gpus=2, store_root=tmp_path / "s", log_dir=tmp_path / "l", poll_s=0.0,
                           log=lambda s: None)
    assert {o.cell.label: o.status for o in report.outcomes}["baseline resnet8 seed=0"] == "weights"
    starts = [e for e in events if e[0] == "start"]
    assert ("start", "baseline resnet8 seed=0", "gpu0", True) in starts  # one weights job ...
    assert [e[1] for e in starts].count("baseline resnet8 seed=0") == 1
    assert not any(e[3] for e in starts if e[1] != "baseline resnet8 seed=0")  # ... the untrained vgg8 base trains
    order = [(e[0], e[1]) for e in events]
    weights_end = order.index(("end", "baseline resnet8 seed=0"))
    assert order.index(("start", "pruning resnet8 l1 seed=0")) > weights_end  # its cells start after it
    assert order.index(("start", "pruning resnet8 fpgm seed=0")) > weights_end

    (run.folder / "model.pt").write_bytes(b"weights")  # weights there: nothing to regenerate, the base is skipped
    assert grid.make_plan(entries, "smoke", tmp_path / "s", hardware=["H"]).regenerate == []


@pytest.mark.parametrize("entry", [("baselines", TINY),
                                   ("distillation", {"train_size": 64, "test_size": 32, "teacher_epochs": 1})])
def test_a_weights_job_trains_the_run_again_for_its_weights_and_keeps_its_measurement(tmp_path, entry):
    base = grid.make_plan([entry], "smoke", tmp_path).cells[0]  # a base model; a teacher (the shared run first)
    assert cellmod.KINDS[base.kind].weights
    out = grid.run_cell(base, str(tmp_path), progress=False)
    weights, result = tmp_path / out["run_id"] / "model.pt", tmp_path / out["run_id"] / "result.json"
    stored = result.read_bytes()
    weights.unlink()
    with pytest.warns(UserWarning, match="no stored weights; regenerating them"):
        again = grid.run_cell(base, str(tmp_path), progress=False, weights_only=True)
    assert again["status"] == "weights" and again["run_id"] == out["run_id"]
    assert weights.is_file() and result.read_bytes() == stored  # the measurement is the stored one
    state = torch.load(weights, weights_only=True)
    assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# -- executors ---------------------------------------------------------------------------------------

def _nvml(n=4):
    dev = mock.create_autospec(NvmlDevices, instance=True)
    dev.count.return_value = n
    dev.uuid.side_effect = lambda i: f"GPU-{i}{i}{i}{i}-0000"
    dev.name.side_effect = lambda i: "NVIDIA H200"
    return dev


def test_local_slots_follow_cuda_visible_devices():
    slots = grid.local_slots(2, nvml=_nvml(), env={"CUDA_VISIBLE_DEVICES": "3,1,0"})
    assert [(s.name, s.gpu, s.hardware) for s in slots] == [("gpu0", 3, "NVIDIA H200"), ("gpu1", 1, "NVIDIA H200")]
    assert [s.gpu for s in grid.local_slots("all", nvml=_nvml(), env={"CUDA_VISIBLE_DEVICES": "GPU-2222,0"})] == [2, 0]
    assert [s.gpu for s in grid.local_slots("1,0", nvml=_nvml(), env={})] == [1, 0]
    with pytest.raises(grid.GridError, match=r"gpus=3: this host shows 2 GPU\(s\).*visible: 0 \(NVIDIA H200\), 1"):
        grid.local_slots(3, nvml=_nvml(), env={"CUDA_VISIBLE_DEVICES": "0,1"})
    with pytest.raises(grid.GridError, match=r"gpus=\[0, 4\]: 4 is not accepted"):
        grid.local_slots([0, 4], nvml=_nvml(), env={})
    with pytest.raises(grid.GridError, match="--gpus 'two' is not accepted"):
        grid.local_slots("two", nvml=_nvml(), env={})
    no_gpu = _nvml(0)
    cpu = grid.local_slots(None, workers=2, nvml=no_gpu, env={})
    assert [(s.name, s.gpu, s.hardware) for s in cpu] == [("cpu0", None, "cpu"), ("cpu1", None, "cpu")]


def test_a_gpu_job_sees_only_its_gpu_in_nvml_order():
    seen = {}
    before = {k: os.environ.get(k) for k in ("CUDA_DEVICE_ORDER", "PYTHONPATH", "OMP_NUM_THREADS")}

    class FakeExecutor:
        def update_parameters(self, **kw):
            seen.update(kw)

        def submit(self, fn, *args):
            seen["env"] = {k: os.environ.get(k) for k in ("CUDA_DEVICE_ORDER", "PYTHONPATH")}
            return SimpleNamespace(job_id="1")

    cell = grid.make_plan([("baselines", TINY)], "smoke", "/nonexistent").cells[0]
    grid._submit_local(FakeExecutor(), grid.Slot("gpu1", 3, "NVIDIA H200"), cell, Path("/s"), 60)
    assert seen["gpus_per_node"] == 1 and seen["visible_gpus"] == (3,) and seen["timeout_min"] == 60
    assert seen["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # CUDA index 3 is then NVML index 3
    assert seen["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
    grid._submit_local(FakeExecutor(), grid.Slot("cpu0", None, "cpu", 2), cell, Path("/s"), 60)
    assert seen["gpus_per_node"] == 0 and seen["visible_gpus"] == ()
    assert {k: os.environ.get(k) for k in before} == before  # the driver's own environment is left as it was


def test_slurm_executor_asks_one_gpu_per_job(tmp_path, monkeypatch):
    with pytest.raises(grid.GridError, match="executor 'slurm' cannot start here"):
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        grid._slurm_executor(tmp_path, 60, None, None, None, None, {})
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    ex = grid._slurm_executor(tmp_path, 600, "gpu", 4, 8, 32, {"account": "abc"})
    text = ex._executor._make_submission_file_text("python -m x", "uid")
    for line in ("#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --nodes=1",
                 "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=8", "#SBATCH --account=abc", "#SBATCH --time=600"):
        assert line in text, line
    assert ex._executor.parameters["array_parallelism"] == 4


# -- the locking store (greenlib.results; its tests live in test_results.py) ---------------------------

def test_the_locking_store_is_the_results_layers():
    from greenlib import results
    from greenlib.scaleout import store

    assert store.LockingStore is results.LockingStore and store.RunLock is results.RunLock


# -- DDP -------------------------------------------------------------------------------------------

def test_rank_shards_make_up_each_global_batch():
    batches = [(torch.arange(10).float().view(10, 1), torch.arange(10)), (torch.ones(1, 1), torch.zeros(1).long())]
    shards = [list(RankShard(batches, r, 3)) for r in range(3)]
    assert all(len(s) == 1 for s in shards)  # the 1-image batch is skipped by every rank
    assert torch.equal(torch.cat([s[0][1] for s in shards]), torch.arange(10))
    with pytest.raises(ValueError, match=r"rank=3 is not accepted; accepted: 0..2"):
        RankShard(batches, 3, 3)


def test_energy_adds_over_distinct_devices():
    a = {"name": "w", "energy_j": 100.0, "energy_wh": 100 / 3600, "elapsed_s": 2.0, "energy_source": "counter",
         "mean_gpu_util_pct": 80.0, "n_samples": 20}
    b = dict(a, energy_j=60.0, energy_wh=60 / 3600, elapsed_s=2.5, mean_gpu_util_pct=40.0)
    two = combine_devices([a, b], ["h:gpu0", "h:gpu1"])
    assert two["energy_j"] == 160.0 and two["elapsed_s"] == 2.5 and two["mean_power_w"] == 160.0 / 2.5
    assert two["mean_gpu_util_pct"] == 60.0 and two["gpu_energy_j"] == [100.0, 60.0] and two["n_devices"] == 2
    shared = combine_devices([a, b], ["h:gpu0", "h:gpu0"])  # two ranks on one GPU: its board counted once
    assert shared["energy_j"] == 100.0 and shared["n_devices"] == 1 and shared["n_ranks"] == 2
    nan = combine_devices([a, dict(b, energy_j=math.nan)], ["h:gpu0", "h:gpu1"])
    assert math.isnan(nan["energy_j"])
    assert device_key({"energy_source": "cpu-rapl"}, "h", [], 7) == "h:cpu-package"
    assert device_key({"energy_source": "cpu-estimate"}, "h", [], 7) == "h:pid7"
    assert device_key({"energy_source": "counter"}, "h", [2], 7) == "h:gpu2"


def _ddp_phase(rank, world_size, checkpoint, die_at_epoch) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)))
    trainer = DDPTrainer(model, RankShard(Batches(die_at_epoch), rank, world_size), TrainConfig(epochs=3, lr=0.1),
                         "cpu", checkpoint=checkpoint, rank=rank, world_size=world_size)
    with Tracer(source="cpu", interval_s=0.05) as tr:
        try:
            trainer.fit(tr, "base_training", progress=False)
        except Interrupt:
            pass
    return {"epochs": [h.epoch for h in trainer.history], "energy_j": [h.window["energy_j"] for h in trainer.history],
            "rank_energy_j": [[r["window"]["energy_j"] for r in ep] for ep in trainer.rank_epochs]}


def _ddp_rank(rank, world_size, port, checkpoint, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        first = _ddp_phase(rank, world_size, checkpoint, die_at_epoch=2)  # both ranks die in epoch 2
        dist.barrier()
        second = _ddp_phase(rank, world_size, checkpoint, die_at_epoch=None)  # a new trainer resumes
        Path(out % rank).write_text(json.dumps({"first": first, "second": second}))
    finally:
        dist.destroy_process_group()


def test_a_killed_ddp_run_resumes_with_every_ranks_energy(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ck, out = tmp_path / "checkpoint.pt", str(tmp_path / "rank%d.json")
    torch.multiprocessing.spawn(_ddp_rank, args=(2, port, str(ck), out), nprocs=2, join=True)
    got = [json.loads(Path(out % r).read_text()) for r in range(2)]
    for r in range(2):
        first, second = got[r]["first"], got[r]["second"]
        assert first["epochs"] == [0, 1] and second["epochs"] == [0, 1, 2]
        assert second["energy_j"][:2] == first["energy_j"]  # each rank keeps its own epochs, not rank 0's
    assert got[0]["second"]["rank_energy_j"] == got[1]["second"]["rank_energy_j"]
    assert [row[1] for row in got[0]["second"]["rank_energy_j"][:2]] == got[1]["first"]["energy_j"]
    assert got[0]["first"]["energy_j"] != got[1]["first"]["energy_j"]  # two processes measured apart
    state = torch.load(ck, weights_only=False)
    assert len(state["rank_epochs"]) == 3 and state["world_size"] == 2


def test_ddp_run_under_torchrun_stores_per_gpu_and_total_energy(tmp_path):
    params = {k: v for k, v in TINY.items() if k != "models"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "greenlib.scaleout.ddp", "--profile", "smoke", "--model", "resnet8", "--seed", "0",
            *[a for k, v in params.items() for a in ("-p", f"{k}={v!r}")], "--store", str(tmp_path), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    ddp = ResultsStore(tmp_path).get(line["run_id"]).result
    c, m, st = ddp["config"], ddp["metrics"], ddp["stages"]["base_training"]
    assert c["kind"] == "baseline_ddp" and c["world_size"] == 2 and c["ddp_backend"] == "gloo"
    assert st["graph_captured"] is False and st["graph_reason"] == "ddp"  # DDP is on train.EAGER_STAGES
    assert len(m["tec_j_per_gpu"]) == 2 and all(j > 0 for j in m["tec_j_per_gpu"])
    assert m["tec_j"] == pytest.approx(sum(m["tec_j_per_gpu"])) == st["energy_j"]  # two processes, two figures
    assert [g["rank"] for g in st["per_gpu"]] == [0, 1] and [e["epoch"] for e in st["epochs"]] == [0]
    assert st["epochs"][0]["images"] == 64  # the two halves make up the single-GPU run's epoch
    trace = pd.read_csv(tmp_path / line["run_id"] / "traces" / "base_training.csv.gz")
    assert set(trace["rank"]) == {0, 1}  # every rank's series is kept
    # the same config on one process: a different run with the same table columns
    cfg = config.resolve("baselines", profile="smoke", **TINY)
    ctx = experiments.prepare(cfg)
    ctx.store = ResultsStore(tmp_path)
    single = experiments.run_baseline(ctx, "resnet8", 0, progress=False)
    assert single["run_id"] != ddp["run_id"]
    single_cols, ddp_cols = set(flatten_result(single)), set(flatten_result(ddp))
    assert single_cols <= ddp_cols
    assert ddp_cols - single_cols == {"world_size", "ddp_backend", "tec_j_per_gpu", "tec_wh_per_gpu", "gpu_names",
                                      "gpu_physical_indices", "hosts", "n_devices_measured"}


def test_ddp_bad_input_is_a_one_line_error_before_any_rank_trains(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    base = ["--profile", "smoke", "--model", "resnet8", "-p", "batch_size=32"]
    assert ddp_main(base) == 2
    assert capsys.readouterr().err.strip() == ("error: batch_size=32 is not divisible by world_size=3; the global "
                                               "batch is split evenly across ranks")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert ddp_main(["--profile", "smoke", "--model", "resnet9"]) == 2
    assert "baselines.models: 'resnet9' is not accepted" in capsys.readouterr().err
    assert ddp_main([*base, "-p", "seeds=[1]"]) == 2
    assert "-p seeds=... is not accepted here; give --model and --seed" in capsys.readouterr().err


def test_main_restores_the_callers_sigterm_handler(tmp_path, capsys):
    """main() turns SIGTERM into a clean stop while it runs, and leaves its caller's handler as it was."""
    mine = lambda signum, frame: None  # noqa: E731
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert grid.main(["--profile", "smoke", "--section", "baselines", "--dry-run", "--gpus", "0",
                          "--store", str(tmp_path)]) == 0
        assert grid.main(["--profile", "smoke", "--section", "nosuch", "--gpus", "0", "--store", str(tmp_path)]) == 2
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "error:" in capsys.readouterr().err


def test_a_cpu_cell_is_found_complete_when_the_grid_runs_on_gpu_slots(tmp_path):
    """device='cpu' runs on the CPU on any slot: its stored run says hardware 'cpu', not the slot's GPU."""
    store = tmp_path / "s"
    cell = grid.make_plan([("baselines", TINY)], "smoke", store).cells[0]
    assert cell.resolve().device == "cpu"
    run = ResultsStore(store).open({**grid.selector(cell), "hardware": "cpu"}, environment={})
    run.finish({"acc": 0.5})
    on_gpus = grid.make_plan([("baselines", TINY)], "smoke", store, hardware=["NVIDIA H100 80GB HBM3"])
    assert on_gpus.done == {cell: run.id} and on_gpus.to_run() == []
    on_cuda = grid.make_plan([("baselines", {**TINY, "device": "cuda"})], "smoke", store,
                             hardware=["NVIDIA H100 80GB HBM3"])
    assert on_cuda.done == {}  # a GPU cell is not satisfied by a CPU measurement


# -- the cost estimate -----------------------------------------------------------------------------

def test_a_grid_is_priced_per_cell_by_greenlib_cost(tmp_path, capsys):
    # a measured baseline: 2 epochs of 100 images, 3600 J and 40 s -> 18 J and 0.2 s per image-epoch
    run = ResultsStore(tmp_path / "quick").open({"kind": "baseline", "model": "vgg16", "batch_size": 32,
                                                 "train_size": 100, "hardware": "GPU A"}, environment={})
    run.save_stage("base_training", {"energy_j": 3600.0, "elapsed_s": 40.0, "epochs": [{"epoch": 0}, {"epoch": 1}]})
    run.finish({"acc": 0.5})
    data = {"base_epochs": 5, "batch_size": 32, "train_size": 1000, "models": ["vgg16"]}
    plan = grid.make_plan([("pruning", {**data, "pruners": ["l1"], "finetune_epochs": 3}),
                           ("quantization", {**data, "precisions": ["fp16"]})], "smoke", tmp_path / "s")
    assert [c.label for c in plan.waves[0]] == ["baseline vgg16 seed=0"]  # one base run for both families
    est = grid.estimate(plan.cells, [tmp_path / "quick"])
    rows = {(r.notebook, r.kind, r.key): r for r in est.itertuples()}
    base = rows[("baseline vgg16 seed=0", "train", "vgg16")]  # the shared base run, priced once
    assert base.epochs == 5 and base.basis == "measured"
    assert base.energy_kwh == pytest.approx(18.0 * 5 * 1000 / 3.6e6)
    assert base.gpu_hours == pytest.approx(0.2 * 5 * 1000 / 3600)
    ft = rows[("pruning vgg16 l1 seed=0", "finetune", "vgg16/l1")]
    assert ft.epochs == 3 and ft.images == 1000
    assert len(est) == 2  # quantization trains nothing of its own
    text = grid.format_estimate(est, len(plan.cells))
    assert "total over 3 runs" in text and "GPU-hours" in text
    with pytest.raises(grid.GridError, match="--estimate-from 'nowhere' is neither a profile"):
        grid.estimate(plan.cells, ["nowhere"])
    assert grid.main(["--profile", "smoke", "--section", "baselines", "--dry-run", "--gpus", "0",
                      "--store", str(tmp_path / "s"), "--estimate-from", str(tmp_path / "quick")]) == 0
    out = capsys.readouterr().out
    assert "wave 2 (cells): 2" in out and "estimate (rates measured on GPU A" in out


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "data" / "campaign").rglob("*.json")),
                         ids=lambda p: p.name)
def test_every_committed_campaign_grid_expands_under_the_paper_profile(path, tmp_path):
    # a typo in a session's grid file would cost a GPU session's start call: caught here instead
    plan = grid.make_plan(grid.read_grid_file(path), "paper", tmp_path)
    cells = [c for wave in plan.waves for c in wave]
    assert cells and len({grid._key(c) for c in cells}) == len(cells)

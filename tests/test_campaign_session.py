"""scripts/campaign_session.sh, the paper campaign's session driver, with a stand-in for the grid.

The stand-in ``python3`` first on PATH records the grid's arguments and writes an interrupted run
(a checkpoint of random bytes) into the store, then sleeps; every other use goes to this Python,
so the carry is the real :mod:`greenlib.scaleout.carry`."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from greenlib.paths import REPO_ROOT
from greenlib.scaleout import carry

SCRIPT = REPO_ROOT / "scripts" / "campaign_session.sh"

FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = greenlib.scaleout.grid ]; then
  echo "$*" >> "$WORK/fake-args"
  run="$GREENLIB_DATA/results/paper/run-$$"
  mkdir -p "$run/stages"
  echo '{"kind": "baseline"}' > "$run/config.json"
  echo '{"name": "train"}' > "$run/stages/train.json"
  head -c $((3 * 1048576)) /dev/urandom > "$run/checkpoint.pt"
  echo "start   fake run on a GPU"
  if [ -n "${FAKE_SAVE_S:-}" ]; then  # as a submitit job (TERM is ignored) caught writing a checkpoint
    trap '' TERM
    sleep 1; printf 'the newer checkpoint' > "$run/.checkpoint.pt.x1y2.tmp"
    sleep "$FAKE_SAVE_S"; mv "$run/.checkpoint.pt.x1y2.tmp" "$run/checkpoint.pt"
  fi
  sleep "${FAKE_S:-0}"
  echo '{"acc": 0.5}' > "$run/metrics.json"
  echo "[1/1] done    fake run"
  exit 0
fi
if [ "$1" = -c ]; then sleep "${FAKE_DECODE_S:-0}"; echo "decoded (stand-in)"; exit 0; fi
exec "$REAL_PYTHON" "$@"
"""


@pytest.fixture
def session(tmp_path):
    """A checkout (a grid file, a committed store, .git and a carried dot-folder) and the machine's env."""
    checkout = tmp_path / "checkout"
    (checkout / "data" / "results" / "paper" / "committed-run").mkdir(parents=True)
    (checkout / "data" / "results" / "paper" / "committed-run" / "result.json").write_text("{}")
    (checkout / "grid.json").write_text("[]")
    (checkout / ".git").mkdir()
    (checkout / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (checkout / ".pa1").mkdir()
    (checkout / ".pa1" / "c100.part.aa").write_bytes(b"archive part")
    shutil.copytree(REPO_ROOT / "greenlib", checkout / "greenlib", ignore=shutil.ignore_patterns("__pycache__"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "REAL_PYTHON": sys.executable,
           "GREENLIB_DATA": str(tmp_path / "machine" / "greenlib"), "WORK": str(tmp_path / "machine" / "campaign"),
           "PYTHONPATH": str(checkout), "WAIT": "2"}
    return checkout, env, tmp_path


def _call(checkout, env, out: Path, *args, **extra):
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=checkout, env={**env, "OUT": str(out), **extra},
                          capture_output=True, text=True, timeout=120)


def test_start_gives_each_grid_its_gpus_as_ordinals_keeps_git_and_collect_returns_results(session):
    checkout, env, tmp = session
    r = _call(checkout, env, tmp / "out0", "start", "grid.json@3", "grid.json@0,1", FAKE_S="0")
    assert r.returncode == 0, r.stdout + r.stderr
    work = Path(env["WORK"])
    args = sorted((work / "fake-args").read_text().splitlines())
    assert len(args) == 2
    assert "--gpus 0,1 " in args[0] and "--gpus 3, " in args[1]  # "3" alone would be a count of GPUs
    assert (work / "repo" / ".git" / "HEAD").is_file() and not (work / "repo" / ".pa1").exists()
    assert (Path(env["GREENLIB_DATA"]) / "results" / "paper" / "committed-run" / "result.json").is_file()

    r = _call(checkout, env, tmp / "out1", "collect", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all done" in r.stdout and r.stdout.count("] done    fake run") == 2
    with tarfile.open(tmp / "out1" / "paper.tar.gz") as tar:
        names = tar.getnames()
    assert sum(n.endswith("/metrics.json") for n in names) == 2
    assert not any(n.endswith(".pt") or "committed-run" in n for n in names)
    assert not (tmp / "out1" / "carry").exists()  # the grids ended: nothing to carry


def test_start_while_the_dataset_decodes_succeeds_and_collect_shows_each_jobs_progress(session):
    # session 10: the decode outlasted WAIT, and start ended with rc 1 though the grid went on
    checkout, env, tmp = session
    r = _call(checkout, env, tmp / "out0", "start", "grid.json@0", FAKE_DECODE_S="4", WAIT="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "decoding the dataset; the grids start after it" in r.stdout
    job = Path(env["WORK"]) / "gridlog-1" / "1208"  # submitit's log of a job, its progress bar last
    job.mkdir(parents=True)
    (job / "1208_0_log.err").write_text("regenerate_weights:  94%|#| 226/240 [26:40<01:39, 7.09s/epoch]\r"
                                         "regenerate_weights:  95%|#| 228/240 [27:01<01:25, 7.09s/epoch]")
    r = _call(checkout, env, tmp / "out1", "collect", "30")
    assert r.returncode == 0 and "all done" in r.stdout, r.stdout + r.stderr
    assert ("progress (gridlog-1/1208/1208_0_log.err): regenerate_weights:  95%|#| 228/240 [27:01<01:25, "
            "7.09s/epoch]\n") in r.stdout


def test_collect_on_a_replaced_machine_stops_at_once(session):
    checkout, env, tmp = session
    t0 = time.monotonic()
    r = _call(checkout, env, tmp / "out", "collect", "300")
    assert r.returncode == 3 and time.monotonic() - t0 < 30
    assert r.stdout.strip().count("\n") == 0 and "no grid was started on this machine" in r.stdout


def test_start_without_the_committed_store_refuses_before_running_anything(session):
    # session 14: the store was moved out of the checkout to make a call smaller; the device's store
    # started empty and both GPUs trained runs that were done, for nine minutes
    checkout, env, tmp = session
    aside = tmp / "aside"
    shutil.move(checkout / "data" / "results" / "paper", aside)
    r = _call(checkout, env, tmp / "out0", "start", "grid.json@0")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout.strip().count("\n") == 0 and "data/results/paper in this checkout holds no complete run" in r.stdout
    assert not (Path(env["WORK"]) / "fake-args").exists() and not (Path(env["GREENLIB_DATA"]) / ".seeded").exists()
    r = _call(checkout, env, tmp / "out1", "start", "grid.json@0", NEW_STORE="1", FAKE_S="0")  # a new campaign
    assert r.returncode == 0 and (Path(env["WORK"]) / "fake-args").is_file(), r.stdout + r.stderr
    shutil.move(aside, checkout / "data" / "results" / "paper")
    r = _call(checkout, env, tmp / "out2", "start", "grid.json@0", FAKE_S="0")  # seeded once: no check again
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_last_call_stops_the_grids_and_the_carry_travels_over_several_calls(session):
    checkout, env, tmp = session
    assert _call(checkout, env, tmp / "out0", "start", "grid.json@0", "grid.json@1", FAKE_S="120").returncode == 0
    pgid = int((Path(env["WORK"]) / "grid.pid").read_text())
    # calls while the grids run: a rolling carry of both 3 MiB runs, 4 MiB a call, so one pack takes two calls
    store = Path(env["GREENLIB_DATA"]) / "results" / "paper"
    mid, said = tmp / "mid-joined", []
    mid.mkdir()
    for i in range(3):
        r = _call(checkout, env, tmp / f"mid{i}", "collect", "0", CARRY_CHUNK_MIB="1", CARRY_MAX_MIB="4")
        assert r.returncode == 0, r.stdout + r.stderr
        said += [line for line in r.stdout.splitlines() if line.startswith("rolling carry")]
        assert sum(f.stat().st_size for f in (tmp / f"mid{i}" / "carry").iterdir()) <= 4 * 2**20 + 4096
        if i < 2:
            for f in (tmp / f"mid{i}" / "carry").iterdir():
                shutil.copy(f, mid / f.name)
    assert said[0].startswith("rolling carry: pack 1, ") and said[0].endswith("come with the next collect")
    assert said[1] == "rolling carry: pack 1, complete" and said[2].startswith("rolling carry: pack 2, ")
    assert (tmp / "mid2" / "carry" / "carry.json").is_file()  # a new pack starts with its manifest
    carry.unpack(mid, tmp / "mid-store")  # the first two calls' chunks: every cut-off run, whole
    assert sorted(p.relative_to(tmp / "mid-store") for p in (tmp / "mid-store").glob("*/checkpoint.pt")) == sorted(
        p.relative_to(store) for p in store.glob("*/checkpoint.pt"))

    r = _call(checkout, env, tmp / "c0", "collect", "0", FINAL="1", CARRY_CHUNK_MIB="1", CARRY_MAX_MIB="2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stopped the grids" in r.stdout
    time.sleep(1)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, signal.SIG_DFL)  # no process of the grids is left
    outs, calls = [tmp / "c0"], 1
    while "0 chunk(s) left" not in r.stdout:
        out = tmp / f"c{calls}"
        r = _call(checkout, env, out, "more", CARRY_MAX_MIB="2")
        assert r.returncode == 0, r.stdout + r.stderr
        outs.append(out)
        calls += 1
        assert calls < 10
    assert calls >= 3  # 6 MiB of checkpoints in 1 MiB chunks, 2 MiB a call
    assert all(sum(f.stat().st_size for f in (o / "carry").iterdir()) <= 2 * 2**20 + 4096 for o in outs)

    # the next machine: every call's chunks in one folder restore both runs
    joined = tmp / "joined"
    joined.mkdir()
    for o in outs:
        for f in (o / "carry").iterdir():
            shutil.copy(f, joined / f.name)
    written = carry.unpack(joined, tmp / "next-store")
    ckpts = sorted(p.relative_to(store) for p in store.glob("*/checkpoint.pt"))
    assert len(ckpts) == 2 and sorted(w for w in written if w.endswith(".pt")) == [c.as_posix() for c in ckpts]
    for c in ckpts:
        assert (tmp / "next-store" / c).read_bytes() == (store / c).read_bytes()


def test_start_unpacks_several_carries_oldest_first_and_the_rolling_carry_skips_what_came_with_them(session):
    checkout, env, tmp = session
    run = "distillation-s-0123456789ab"
    for name, payload in (("old", b"epoch 10"), ("new", b"epoch 20")):
        src = tmp / f"src-{name}" / run
        src.mkdir(parents=True)
        (src / "config.json").write_text('{"kind": "distillation"}')
        (src / "checkpoint.pt").write_bytes(payload)
        carry.pack(src.parent, checkout / f".cr-{name}")
    teacher = tmp / "src-teacher" / "teacher-t-0123456789ab"
    teacher.mkdir(parents=True)
    (teacher / "model.pt").write_bytes(b"teacher weights")
    carry.pack(teacher.parent, checkout / ".cr-teacher")
    r = _call(checkout, env, tmp / "out0", "start", "grid.json@0", str(checkout / ".cr-teacher"),
              str(checkout / ".cr-old"), str(checkout / ".cr-new"), FAKE_S="60")
    assert r.returncode == 0, r.stdout + r.stderr
    store = Path(env["GREENLIB_DATA"]) / "results" / "paper"
    assert (store / run / "checkpoint.pt").read_bytes() == b"epoch 20"  # the newest carry went last
    try:
        r = _call(checkout, env, tmp / "mid", "collect", "0", "teacher-*")
        assert r.returncode == 0, r.stdout + r.stderr
        m = json.loads((tmp / "mid" / "carry" / "carry.json").read_text())
        assert m["files"] and all(f.startswith("run-") for f in m["files"])  # the fake grid's run alone
        assert "rolling carry: pack 1, complete" in r.stdout
    finally:
        _call(checkout, env, tmp / "end", "collect", "0", FINAL="1")


def test_the_last_call_lets_a_checkpoint_being_written_land_before_it_kills(session):
    checkout, env, tmp = session
    assert _call(checkout, env, tmp / "out0", "start", "grid.json@0", FAKE_S="120", FAKE_SAVE_S="9").returncode == 0
    t0 = time.monotonic()
    r = _call(checkout, env, tmp / "c0", "collect", "0", FINAL="1")
    assert r.returncode == 0 and "stopped the grids" in r.stdout, r.stdout + r.stderr
    assert 3 < time.monotonic() - t0 < 40
    store = Path(env["GREENLIB_DATA"]) / "results" / "paper"
    (ckpt,) = store.glob("run-*/checkpoint.pt")
    assert ckpt.read_bytes() == b"the newer checkpoint" and not list(store.rglob("*.tmp"))
    man = json.loads((tmp / "c0" / "carry" / "carry.json").read_text())
    assert f"{ckpt.parent.name}/checkpoint.pt" in man["files"]


def test_the_carry_leaves_room_for_the_results_in_what_one_call_returns(session):
    checkout, env, tmp = session
    assert _call(checkout, env, tmp / "out0", "start", "grid.json@0", "grid.json@1", FAKE_S="60").returncode == 0
    try:
        out = tmp / "mid"
        out.mkdir()
        (out / "results.bin").write_bytes(b"r" * (2 * 2**20))  # as a large paper.tar.gz
        r = _call(checkout, env, out, "collect", "0", CARRY_CHUNK_MIB="1", CARRY_MAX_MIB="4", OUT_MAX_MIB="5")
        assert r.returncode == 0, r.stdout + r.stderr
        carried = sum(f.stat().st_size for f in (out / "carry").iterdir())
        assert 2 * 2**20 <= carried <= 3 * 2**20 and "come with the next collect" in r.stdout
        assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) <= 5 * 2**20
    finally:
        _call(checkout, env, tmp / "end", "collect", "0", FINAL="1")

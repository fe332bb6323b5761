"""Carrying run state between machines: a killed run's checkpoint and a teacher's weights, in chunks."""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile

import pytest
import torch

from greenlib.io import atomic_write_bytes
from greenlib.results import REGENERATE_CHECKPOINT, ResultsStore, incomplete_reason
from greenlib.scaleout import carry
from test_train import Batches, Interrupt, _fit


def _store_with_a_killed_run_and_a_teacher(root):
    store = ResultsStore(root)
    teacher = store.open({"kind": "teacher", "model": "t", "seed": 0})
    (teacher.folder / "model.pt").write_bytes(b"teacher weights " * 5000)
    teacher.finish({"acc": 0.5}, {"hardware": "cpu"})
    killed = store.open({"kind": "baseline", "model": "m", "seed": 0})
    with pytest.raises(Interrupt):
        _fit(killed.folder / "checkpoint.pt", Batches(die_at_epoch=2))
    (killed.folder / "stages").mkdir()
    (killed.folder / "stages" / "pretrain.json").write_text('{"name": "pretrain"}')
    fresh = store.open({"kind": "baseline", "model": "m", "seed": 1})  # started, nothing to resume: stays
    return teacher, killed, fresh


def test_a_killed_run_resumes_on_another_machine_and_a_teachers_weights_travel(tmp_path):
    teacher, killed, fresh = _store_with_a_killed_run_and_a_teacher(tmp_path / "a")
    other = ResultsStore(tmp_path / "a").open({"kind": "teacher", "model": "u", "seed": 0})
    (other.folder / "model.pt").write_bytes(b"x")
    other.finish({"acc": 0.1}, {})
    m = carry.pack(tmp_path / "a", tmp_path / "out", weights=[teacher.id], chunk_bytes=4096)
    assert m["files"] == sorted([f"{teacher.id}/model.pt", f"{killed.id}/checkpoint.pt", f"{killed.id}/config.json",
                                 f"{killed.id}/stages/pretrain.json"])
    assert len(m["chunks"]) > 2 and all(c["bytes"] <= 4096 for c in m["chunks"])
    assert not any(fresh.id in f or other.id in f for f in m["files"])

    # the next machine: the committed store (the teacher's results, no weights), then the carried chunks
    b = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / teacher.id, b / teacher.id, ignore=shutil.ignore_patterns("*.pt"))
    written = carry.unpack(tmp_path / "out", b)
    assert sorted(written) == m["files"]
    assert (b / teacher.id / "model.pt").read_bytes() == (teacher.folder / "model.pt").read_bytes()
    assert ResultsStore(b).get(teacher.id).result["metrics"] == {"acc": 0.5}
    ref, _, _ = _fit(None, Batches())
    # a loader that dies in epoch 0: only a run resumed from the carried checkpoint (at epoch 2) gets through
    resumed, _, summary = _fit(b / killed.id / "checkpoint.pt", Batches(die_at_epoch=0))
    assert [e["epoch"] for e in summary["epochs"]] == [0, 1, 2, 3]  # epochs 0-1 came with the checkpoint
    for p, q in zip(ref.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_unpack_never_overwrites_a_complete_run_and_names_a_bad_chunk(tmp_path):
    teacher, _, _ = _store_with_a_killed_run_and_a_teacher(tmp_path / "a")
    carry.pack(tmp_path / "a", tmp_path / "out", weights=["teacher-*", "*"], chunk_bytes=50_000)
    b = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / teacher.id, b / teacher.id)
    (b / teacher.id / "model.pt").write_bytes(b"weights already here")
    assert not any(w.startswith(teacher.id) for w in carry.unpack(tmp_path / "out", b))
    assert (b / teacher.id / "model.pt").read_bytes() == b"weights already here"

    man = json.loads((tmp_path / "out" / "carry.json").read_text())
    last = tmp_path / "out" / man["chunks"][-1]["file"]
    last.write_bytes(last.read_bytes()[:-1] + b"?")
    with pytest.raises(carry.CarryError, match=r"chunk .*carry\.tar\.00\d' is damaged"):
        carry.unpack(tmp_path / "out", tmp_path / "c")
    last.unlink()
    with pytest.raises(carry.CarryError, match=r"chunk .*carry\.tar\.00\d' is missing"):
        carry.unpack(tmp_path / "out", tmp_path / "c")
    assert not (tmp_path / "c").exists()  # nothing written from a damaged carry
    with pytest.raises(carry.CarryError, match="is not a folder"):
        carry.pack(tmp_path / "nowhere", tmp_path / "out")


def test_the_command_line_packs_and_restores(tmp_path, capsys):
    teacher, killed, _ = _store_with_a_killed_run_and_a_teacher(tmp_path / "a")
    assert carry.main(["pack", str(tmp_path / "a"), str(tmp_path / "out"), "--weights", "*"]) == 0
    assert "packed 4 files" in capsys.readouterr().out
    assert carry.main(["unpack", str(tmp_path / "out"), str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / killed.id / "checkpoint.pt").exists()
    assert carry.main(["unpack", str(tmp_path / "nowhere"), str(tmp_path / "b")]) == 2
    assert "cannot read the manifest" in capsys.readouterr().err


def test_pack_keeps_under_one_transfers_limit_and_names_what_it_left_out(tmp_path):
    teacher, killed, _ = _store_with_a_killed_run_and_a_teacher(tmp_path / "a")
    (teacher.folder / "model.pt").write_bytes(b"w" * 300_000)  # larger than the killed run's checkpoint
    small = sum(f.stat().st_size for f in killed.folder.rglob("*") if f.is_file())
    m = carry.pack(tmp_path / "a", tmp_path / "out", weights=["*"], max_bytes=small + 100_000)
    assert all(f.startswith(killed.id) for f in m["files"]) and list(m["left_out"]) == [teacher.id]
    assert m["left_out"][teacher.id] > 300_000 and m["bytes"] <= small + 100_000
    assert sorted(carry.unpack(tmp_path / "out", tmp_path / "b")) == m["files"]
    assert carry.pack(tmp_path / "a", tmp_path / "out2", weights=["*"])["left_out"] == {}
    with pytest.raises(carry.CarryError, match="max_bytes=0 is not accepted"):
        carry.pack(tmp_path / "a", tmp_path / "out3", max_bytes=0)


def test_an_interrupted_run_goes_before_weights_that_are_smaller(tmp_path):
    teacher, killed, _ = _store_with_a_killed_run_and_a_teacher(tmp_path / "a")
    run_bytes = sum(f.stat().st_size for f in killed.folder.rglob("*") if f.is_file())
    (teacher.folder / "model.pt").write_bytes(b"w" * (run_bytes // 2))  # smaller, but an earlier carry has it
    n_files = sum(1 for f in killed.folder.rglob("*") if f.is_file())
    m = carry.pack(tmp_path / "a", tmp_path / "out", weights=["*"], max_bytes=run_bytes + 1024 * n_files + 500)
    assert {f.split("/")[0] for f in m["files"]} == {killed.id} and list(m["left_out"]) == [teacher.id]
    m = carry.pack(tmp_path / "a", tmp_path / "out2", weights=["*"], max_bytes=run_bytes)  # the run does not fit
    assert {f.split("/")[0] for f in m["files"]} == {teacher.id} and list(m["left_out"]) == [killed.id]


def test_a_write_killed_before_its_rename_leaves_a_temporary_that_never_travels(tmp_path):
    _, killed, _ = _store_with_a_killed_run_and_a_teacher(tmp_path / "a")
    (killed.folder / ".checkpoint.pt.abc123.tmp").write_bytes(b"x" * 1000)  # what a SIGKILL mid-save leaves
    (killed.folder / "supernet.ckpt.tmp").write_bytes(b"y")  # the NAS search's own temporary name
    m = carry.pack(tmp_path / "a", tmp_path / "out")
    assert f"{killed.id}/checkpoint.pt" in m["files"] and not any(f.endswith(".tmp") for f in m["files"])


def test_changed_since_keeps_what_a_machine_added_to_the_carry_it_started_with(tmp_path):
    teacher, killed, _ = _store_with_a_killed_run_and_a_teacher(tmp_path / "a")
    mark = tmp_path / "unpacked"
    mark.touch()
    old = mark.stat().st_mtime - 60
    for f in (teacher.folder / "model.pt", killed.folder / "checkpoint.pt"):
        os.utime(f, (old, old))  # both came with the carry the machine started with
    assert carry.to_carry(tmp_path / "a", ["*"], changed_since=mark.stat().st_mtime) == []
    atomic_write_bytes(killed.folder / "checkpoint.pt", (killed.folder / "checkpoint.pt").read_bytes())
    os.utime(killed.folder / "checkpoint.pt", (old + 120, old + 120))  # the run went on: a newer checkpoint
    assert carry.main(["pack", str(tmp_path / "a"), str(tmp_path / "out"), "--weights", "*",
                       "--changed-since", str(mark)]) == 0
    m = json.loads((tmp_path / "out" / "carry.json").read_text())
    assert {f.split("/")[0] for f in m["files"]} == {killed.id} and f"{killed.id}/config.json" in m["files"]
    assert carry.main(["pack", str(tmp_path / "a"), str(tmp_path / "out2"), "--changed-since",
                       str(tmp_path / "nowhere")]) == 2


def test_a_run_that_ended_since_start_travels_with_its_results_so_the_next_machine_skips_it(tmp_path):
    a = tmp_path / "a"
    teacher, killed, _ = _store_with_a_killed_run_and_a_teacher(a)
    mark = tmp_path / "unpacked"
    mark.touch()
    old, later = mark.stat().st_mtime - 60, mark.stat().st_mtime + 60
    for f in a.rglob("*"):
        os.utime(f, (old, old))  # the committed store and the carry the machine started with
    done = ResultsStore(a).open({"kind": "distillation", "model": "s", "seed": 0})
    (done.folder / "model.pt").write_bytes(b"student weights")
    (done.folder / "checkpoint.pt").write_bytes(b"last checkpoint")  # left by a trainer that does not remove it
    (done.folder / "stages").mkdir()
    (done.folder / "stages" / "distillation.json").write_text('{"name": "distillation"}')
    done.finish({"acc": 0.7}, {"hardware": "H200"})
    for f in done.folder.rglob("*"):
        os.utime(f, (later, later))  # it ended on this machine
    since = mark.stat().st_mtime
    results = sorted(f"{done.id}/{n}" for n in ("config.json", "environment.json", "metrics.json", "result.json",
                                                "stages/distillation.json"))
    assert [p.as_posix() for p in carry.to_carry(a, ["teacher-*"], changed_since=since)] == results
    assert f"{done.id}/model.pt" in [p.as_posix() for p in carry.to_carry(a, [done.id], changed_since=since)]
    assert not any(p.parts[0] == done.id for p in carry.to_carry(a, ["teacher-*"]))  # the last pack: it came back

    carry.pack(a, tmp_path / "out", ["teacher-*"], changed_since=since)
    b = tmp_path / "b"  # the next machine: the committed store (without the run), then this carry
    shutil.copytree(a / teacher.id, b / teacher.id, ignore=shutil.ignore_patterns("*.pt"))
    assert sorted(carry.unpack(tmp_path / "out", b)) == results
    again = ResultsStore(b).get(done.id)
    assert incomplete_reason(b / done.id) is None and again.result["metrics"] == {"acc": 0.7}
    assert not (b / done.id / "checkpoint.pt").exists() and not (b / killed.id).exists()


def test_the_half_done_training_of_a_complete_runs_lost_weights_travels_and_never_goes_back(tmp_path):
    """A teacher whose weights are trained again (experiments.stored_model) is a complete run with a
    checkpoint; the session that ran out mid-way must carry it, whether or not the weights are asked for."""
    a = tmp_path / "a"
    teacher, _, _ = _store_with_a_killed_run_and_a_teacher(a)
    (teacher.folder / "model.pt").unlink()
    (teacher.folder / "pruned_model.pt").write_bytes(b"a result of the run, not state")  # never carried
    half = teacher.folder / REGENERATE_CHECKPOINT
    half.write_bytes(b"epoch 120 of 240")
    mark = tmp_path / "unpacked"
    mark.touch()
    os.utime(half, (mark.stat().st_mtime + 60,) * 2)
    for weights in ([], ["teacher-*"]):
        for since in (None, mark.stat().st_mtime):
            assert f"{teacher.id}/{REGENERATE_CHECKPOINT}" in [
                p.as_posix() for p in carry.to_carry(a, weights, changed_since=since)]
    assert not any(p.name == "pruned_model.pt" for p in carry.to_carry(a, ["*"]))
    os.utime(half, (mark.stat().st_mtime - 60,) * 2)  # it came with the carry the machine started with
    assert not any(p.parts[0] == teacher.id for p in carry.to_carry(a, [], changed_since=mark.stat().st_mtime))
    # packed before weights, as an interrupted run is, even before smaller ones
    other = ResultsStore(a).open({"kind": "teacher", "model": "u", "seed": 0})
    (other.folder / "model.pt").write_bytes(b"w")
    other.finish({"acc": 0.1}, {})
    m = carry.pack(a, tmp_path / "small", weights=[other.id], max_bytes=half.stat().st_size + 1024)
    assert m["files"] == [f"{teacher.id}/{REGENERATE_CHECKPOINT}"] and other.id in m["left_out"]
    carry.pack(a, tmp_path / "out")

    b = tmp_path / "b"  # the next machine: the committed store (results, no *.pt), then the carry
    shutil.copytree(teacher.folder, b / teacher.id, ignore=shutil.ignore_patterns("*.pt"))
    (b / teacher.id / REGENERATE_CHECKPOINT).write_bytes(b"epoch 60, from an older carry")
    assert f"{teacher.id}/{REGENERATE_CHECKPOINT}" in carry.unpack(tmp_path / "out", b)
    assert (b / teacher.id / REGENERATE_CHECKPOINT).read_bytes() == b"epoch 120 of 240"  # the newer replaces it
    assert ResultsStore(b).get(teacher.id).result["metrics"] == {"acc": 0.5}
    (b / teacher.id / REGENERATE_CHECKPOINT).unlink()
    (b / teacher.id / "model.pt").write_bytes(b"trained to the end here")  # the weights are back
    assert not any(w.startswith(teacher.id) for w in carry.unpack(tmp_path / "out", b))
    assert not (b / teacher.id / REGENERATE_CHECKPOINT).exists()  # a stale checkpoint never comes back


def test_gather_checks_a_carry_returned_over_several_calls_and_splits_it_for_the_calls_out(tmp_path, capsys):
    _store_with_a_killed_run_and_a_teacher(tmp_path / "a")
    m = carry.pack(tmp_path / "a", tmp_path / "packed", weights=["*"], chunk_bytes=20_000)
    assert len(m["chunks"]) >= 4
    calls = [tmp_path / f"call{i}" / "carry" for i in range(3)]
    for c in calls:
        c.mkdir(parents=True)
    shutil.copy(tmp_path / "packed" / "carry.json", calls[0])
    for i, c in enumerate(m["chunks"]):
        shutil.copy(tmp_path / "packed" / c["file"], calls[i % 3])
    assert carry.main(["gather", *map(str, reversed(calls)), "--into", str(tmp_path / ".cr7"), "--max-mib",
                       str(45_000 / 2**20)]) == 0
    folders = sorted((p for p in tmp_path.iterdir() if p.name.startswith(".cr7")), key=lambda p: len(p.name))
    sizes = [sum(f.stat().st_size for f in d.iterdir()) for d in folders]
    # cut anew, one chunk a folder, each folder filled (two of the 20 kB chunks would have left 5 kB)
    assert [f.name for f in folders] == [".cr7", *(f".cr7+{i}" for i in range(2, len(folders) + 1))]
    assert len(folders) == -(-(m["bytes"] + (folders[0] / "carry.json").stat().st_size) // 45_000)
    assert all(s <= 45_000 for s in sizes) and all(s > 44_000 for s in sizes[:-1])
    assert [sorted(f.name for f in d.iterdir()) for d in folders] == \
        [["carry.json", "carry.tar.000"], *([[f"carry.tar.{i:03d}"] for i in range(1, len(folders))])]
    assert ".cr7+2: " in capsys.readouterr().out
    joined = tmp_path / "joined"  # what the device calls' set-up does with .cr7, .cr7+2, ...
    joined.mkdir()
    for d in folders:
        for f in d.iterdir():
            shutil.copy(f, joined / f.name)
    assert sorted(carry.unpack(joined, tmp_path / "b")) == m["files"]

    (calls[1] / m["chunks"][1]["file"]).unlink()
    with pytest.raises(carry.CarryError, match=rf"1 chunk\(s\) of .* are in none of the sources: {m['chunks'][1]['file']}"):
        carry.gather(calls, tmp_path / ".cr8")
    shutil.copy(tmp_path / "packed" / "carry.json", calls[2])
    (calls[2] / "carry.json").write_text((calls[2] / "carry.json").read_text().replace('"weights"', '"weights" '))
    with pytest.raises(carry.CarryError, match="hold 2 different carry.json"):
        carry.gather(calls, tmp_path / ".cr8")
    with pytest.raises(carry.CarryError, match="is not empty"):
        carry.gather([tmp_path / "packed"], tmp_path / ".cr7")
    with pytest.raises(carry.CarryError, match="max_bytes=100 leaves no room beside the"):
        carry.gather([tmp_path / "packed"], tmp_path / ".cr9", max_bytes=100)
    assert not (tmp_path / ".cr8").exists() and not (tmp_path / ".cr9").exists()
    assert sorted(carry.gather([tmp_path / "packed"], tmp_path / ".cr10")[0].iterdir()) == \
        sorted((tmp_path / ".cr10" / f.name) for f in (tmp_path / "packed").iterdir())  # no limit: as packed


def test_callsize_counts_the_tree_as_a_call_carries_it_and_refuses_a_call_over_64_mib(tmp_path, capsys, monkeypatch):
    import subprocess
    repo = tmp_path / "repo"
    (repo / "figures").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/.pa*/\n/.cache/\n")
    (repo / "figures" / "big.png").write_bytes(b"x" * 3000)
    (repo / "kept.py").write_bytes(b"y" * 1000)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    (repo / "untracked.txt").write_bytes(b"z" * 500)  # not ignored: it travels
    (repo / ".cache").mkdir()
    (repo / ".cache" / "ignored").write_bytes(b"w" * 7000)  # ignored and not carried: it does not
    (repo / ".pa1").mkdir()
    (repo / ".pa1" / "part").write_bytes(b"p" * 2000)
    tree = 3000 + 1000 + 500 + len((repo / ".gitignore").read_bytes())
    assert carry.call_bytes([".pa1"], repo) == (tree, {".pa1": 2000})
    (repo / "figures" / "big.png").unlink()  # left out of the checkout for the carrying calls
    assert carry.call_bytes([], repo) == (tree - 3000, {})
    monkeypatch.chdir(repo)
    assert carry.main(["callsize", ".pa1", "-"]) == 0
    assert "call 1: 0.0 MiB (the working tree 0.0 + .pa1 0.0) of 64" in capsys.readouterr().out
    (repo / ".pa2").mkdir()
    with open(repo / ".pa2" / "part", "wb") as f:
        f.truncate(64 * 2**20)  # with the tree, over the limit
    assert carry.main(["callsize", ".pa1", ".pa2"]) == 2
    assert "error: call 2 (.pa2) carries 64.0 MiB, over the 64 MiB a call carries out" in capsys.readouterr().err
    assert carry.main(["callsize", ".pa9"]) == 2
    assert "carried folder '.pa9' is not a folder" in capsys.readouterr().err


def _results_archive(results, path, exclude=("*.pt",)):
    """What ``campaign_session.sh collect`` returns: the store's files under ``<profile>/``, no weights."""
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(results.rglob("*")):
            if f.is_file() and not any(f.match(x) for x in exclude):
                tar.add(f, arcname=f.relative_to(results.parent).as_posix())


def test_land_takes_the_complete_runs_of_the_calls_archives_and_never_overwrites_a_stored_one(tmp_path, capsys):
    machine = ResultsStore(tmp_path / "machine" / "paper")
    ended = machine.open({"kind": "distillation", "model": "s", "seed": 0})
    (ended.folder / "model.pt").write_bytes(b"weights")
    ended.finish({"acc": 0.736}, {"hardware": "H200"})
    cut = machine.open({"kind": "distillation", "model": "s", "seed": 1})
    (cut.folder / "checkpoint.pt").write_bytes(b"epoch 210")
    shared = machine.open({"kind": "teacher", "model": "t", "seed": 0})
    shared.finish({"acc": 0.9}, {})
    (machine.root / ".locks").mkdir(exist_ok=True)
    (machine.root / ".locks" / f"{cut.id}.lock").write_text("")
    (tmp_path / "call7").mkdir()
    _results_archive(machine.root, tmp_path / "call7" / "paper.tar.gz")

    committed = ResultsStore(tmp_path / "repo" / "paper")
    kept = committed.open({"kind": "teacher", "model": "t", "seed": 0})
    kept.finish({"acc": 0.5}, {})  # stored earlier: the archive's copy must not replace it
    assert carry.main(["land", str(tmp_path / "call7"), "--into", str(committed.root)]) == 0
    said = capsys.readouterr().out
    assert f"landed {ended.id}" in said and f"left as it is: {shared.id}" in said
    assert f"not complete, left out: {cut.id}" in said
    assert incomplete_reason(committed.root / ended.id) is None
    assert committed.get(ended.id).result["metrics"] == {"acc": 0.736}
    assert committed.get(kept.id).result["metrics"] == {"acc": 0.5}
    assert not (committed.root / cut.id).exists() and not (committed.root / ".locks").exists()
    assert not (committed.root / ended.id / "model.pt").exists()

    quick = tmp_path / "machine" / "quick"
    shutil.copytree(machine.root / ended.id, quick / ended.id)
    _results_archive(quick, tmp_path / "quick.tar.gz")
    with pytest.raises(carry.CarryError, match="holds profile 'quick', not 'paper'"):
        carry.land([tmp_path / "quick.tar.gz"], committed.root)
    with pytest.raises(carry.CarryError, match="is not a folder"):  # a mistyped --into creates no new store
        carry.land([tmp_path / "call7"], tmp_path / "repo" / "papr")
    assert not (tmp_path / "repo" / "papr").exists()
    with tarfile.open(tmp_path / "climbs.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("paper/../../outside.json")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(carry.CarryError, match="is not a file inside a run folder"):
        carry.land([tmp_path / "climbs.tar.gz"], committed.root)
    (tmp_path / "bad.tar.gz").write_bytes(b"not an archive")
    assert carry.main(["land", str(tmp_path / "bad.tar.gz"), "--into", str(committed.root)]) == 2
    assert "cannot read the results archive" in capsys.readouterr().err

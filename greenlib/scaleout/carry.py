"""Carry run state between GPU machines that pass only small files (a campaign spanning sessions).

The results store commits results, not weights or checkpoints (``*.pt``, ``*.ckpt``). A run cut off
when a lent machine goes back resumes from its checkpoint only where that checkpoint travels, and a
distillation student needs its teacher's weights: without them the next machine retrains the
teacher. ``pack`` writes what the next machine needs as one tar in numbered chunks of at most
``chunk_bytes`` (a lending service that returns files of at most 16 MiB takes them as they are), with
a manifest of their sizes and SHA-256; ``unpack`` checks and joins the chunks there and puts the
files into the store; ``gather`` takes one carry that came back over several calls, checks it and
cuts it anew into folders that one call each carries out again::

    python -m greenlib.scaleout.carry pack  /tmp/greenlib/results/paper $OUT/carry --weights 'teacher-*'
    python -m greenlib.scaleout.carry unpack carried/ data/results/paper
    python -m greenlib.scaleout.carry gather call1/carry call2/carry call3/carry --into .cr7 --max-mib 40
    python -m greenlib.scaleout.carry land call1 call2 --into data/results/paper
    python -m greenlib.scaleout.carry callsize .pa1 .pa2 .cr7 .cr7+2 .pa3,.whs

``callsize`` says what each of the next calls carries out (the working tree as it is now and the
folders named for that call) and fails when one is over the 64 MiB a call takes.

``land`` takes the runs that ended from the results archives the calls returned
(``paper.tar.gz`` of ``scripts/campaign_session.sh collect``) into the committed store: complete
runs only, never over a run already complete there, ``result.json`` written last.

What is packed: every interrupted run folder (no complete ``result.json``) that holds a checkpoint,
whole (its config, finished stages and traces with it), the weights (``model.pt``) of the
complete runs whose id matches a ``--weights`` pattern, and the checkpoint of a complete run whose
lost weights are being trained again (:data:`greenlib.results.REGENERATE_CHECKPOINT`); never the
leftover temporary of a write that was killed before its rename (``*.tmp``,
:func:`greenlib.io.atomic_write_bytes`). ``--changed-since
FILE`` keeps only what changed after FILE was touched (a run whose checkpoint is newer, weights that
are newer, a run that ended since, with its results but no checkpoint or weights unless asked
for): what a machine adds to the carry it was started with, so that the next machine, started
from the committed store and this carry, neither repeats a run that ended nor loses one cut off.
``unpack`` never overwrites a file of a run that is complete in the target store (it adds the
weights such a run lacks) but the checkpoint of its weights' training, and writes no such checkpoint
where the weights are there; in an interrupted run the carried files replace the older ones, so
several carries unpacked oldest first leave the newest state.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Sequence

from ..io import atomic_write_bytes, atomic_write_json
from ..results import REGENERATE_CHECKPOINT, incomplete_reason

CHUNK_BYTES = 15 * 2**20
CALL_BYTES = 64 * 2**20  # what one device call carries out, the working tree included
CHECKPOINTS = ("*.pt", "*.ckpt")
WEIGHTS = "model.pt"
TEMPORARIES = "*.tmp"


class CarryError(ValueError):
    """Bad input or a damaged carry (one line naming the file)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _matches(part: bytes, chunk: dict) -> bool:
    """Whether ``part`` is the manifest entry ``chunk`` (its size and SHA-256)."""
    return len(part) == chunk["bytes"] and _sha256(part) == chunk["sha256"]


def _chunk_entries(pieces: Sequence[bytes], name: str) -> list[dict]:
    """The manifest's entry of each chunk, in order: its file (``<name>.tar.NNN``), size and SHA-256."""
    return [{"file": f"{name}.tar.{i:03d}", "bytes": len(p), "sha256": _sha256(p)} for i, p in enumerate(pieces)]


def _check_max_bytes(max_bytes: int | None) -> None:
    if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 1):
        raise CarryError(f"max_bytes={max_bytes!r} is not accepted; accepted: an int >= 1 or None")


def _checkpoint(f: Path) -> bool:
    return any(fnmatch.fnmatch(f.name, pat) for pat in CHECKPOINTS)


def _resumes_weights(f: Path) -> bool:
    """The checkpoint, in a complete run, of the training that regenerates its lost weights."""
    return f.name == REGENERATE_CHECKPOINT


def _kept(root: Path, rel: Path) -> bool:
    """Whether :func:`unpack` leaves ``root / rel`` as it is: a complete run's files are never
    overwritten (the weights it lacks are added), and the checkpoint of its weights' training is
    written only while the weights are gone (a newer one replaces an older)."""
    run = root / rel.parts[0]
    if incomplete_reason(run) is not None:
        return False
    if _resumes_weights(rel):
        return (run / WEIGHTS).exists()
    return (root / rel).exists()


def to_carry(store_root: str | Path, weights: Sequence[str] = (), changed_since: float | None = None) -> list[Path]:
    """The files :func:`pack` takes from ``store_root``, relative to it, sorted.

    ``changed_since`` (a POSIX time): only interrupted runs whose checkpoint was written after it,
    only weights written after it, and the runs that ended after it (their results, no weights
    unless asked for): a machine lost later restarts from this carry without running them again."""
    root = Path(store_root)
    if not root.is_dir():
        raise CarryError(f"store {str(root)!r} is not a folder")

    def new(f: Path) -> bool:
        return changed_since is None or f.stat().st_mtime > changed_since

    out: list[Path] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in folder.rglob("*") if f.is_file() and not fnmatch.fnmatch(f.name, TEMPORARIES))
        if incomplete_reason(folder) is None:  # complete: the weights asked for; its results if it ended here
            wanted = any(fnmatch.fnmatch(folder.name, w) for w in weights)
            ended_here = changed_since is not None and new(folder / "result.json")
            out += [f for f in files if (wanted and f.name == WEIGHTS and new(f))
                    or (ended_here and not _checkpoint(f))
                    or (_resumes_weights(f) and new(f))]  # its lost weights half trained again
        elif any(_checkpoint(f) and new(f) for f in files):
            out += files  # interrupted with a checkpoint: the whole folder resumes elsewhere
    return [f.relative_to(root) for f in out]


def pack(store_root: str | Path, out_dir: str | Path, weights: Sequence[str] = (),
         chunk_bytes: int = CHUNK_BYTES, name: str = "carry", max_bytes: int | None = None,
         changed_since: float | None = None) -> dict:
    """Write ``<name>.tar.NNN`` chunks and ``<name>.json`` (the manifest, returned) under ``out_dir``.

    ``max_bytes``: what one transfer takes back; interrupted runs (the work a lost machine loses)
    are packed before weights (which an earlier carry may hold), each group smallest first, while
    they fit; the others are named in the manifest's ``left_out`` (run id -> bytes).
    ``changed_since``: see :func:`to_carry`."""
    if not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise CarryError(f"chunk_bytes={chunk_bytes!r} is not accepted; accepted: an int >= 1")
    _check_max_bytes(max_bytes)
    root, out = Path(store_root), Path(out_dir)
    files = to_carry(root, weights, changed_since)
    left_out: dict[str, int] = {}
    if max_bytes is not None:
        runs: dict[str, list[Path]] = {}
        for rel in files:
            runs.setdefault(rel.parts[0], []).append(rel)
        size = {rid: sum((root / r).stat().st_size + 1024 for r in rels) for rid, rels in runs.items()}  # + tar headers
        files, total = [], 0
        complete = {rid: incomplete_reason(root / rid) is None  # their weights alone
                    and not any(_resumes_weights(r) for r in runs[rid]) for rid in runs}
        for rid in sorted(runs, key=lambda r: (complete[r], size[r], r)):
            if total + size[rid] <= max_bytes:
                files += runs[rid]
                total += size[rid]
            else:
                left_out[rid] = size[rid]
        files.sort()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in files:
            tar.add(root / rel, arcname=rel.as_posix(), recursive=False)
    data = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    pieces = [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
    chunks = _chunk_entries(pieces, name)
    for c, part in zip(chunks, pieces):
        (out / c["file"]).write_bytes(part)
    manifest = {"files": [r.as_posix() for r in files], "bytes": len(data), "sha256": _sha256(data),
                "chunks": chunks, "weights": list(weights), "left_out": left_out}
    atomic_write_json(out / f"{name}.json", manifest)
    return manifest


def _run_file(member: tarfile.TarInfo, where: str, depth: int) -> Path:
    """A tar member's path, checked: a regular file at least ``depth`` parts deep (``<run id>/file``
    in a carry, ``<profile>/<run id>/file`` in a results archive), never absolute or climbing out."""
    rel = Path(member.name)
    if not member.isfile() or rel.is_absolute() or ".." in rel.parts or len(rel.parts) < depth:
        raise CarryError(f"{where}: member {member.name!r} is not a file inside a run folder")
    return rel


def unpack(src_dir: str | Path, store_root: str | Path, name: str = "carry") -> list[str]:
    """Check the chunks against ``<name>.json`` in ``src_dir``, join them and write their files
    into ``store_root`` (no file of a run complete there is overwritten); returns the files written."""
    src, root = Path(src_dir), Path(store_root)
    man_path = src / f"{name}.json"
    try:
        manifest = json.loads(man_path.read_text())
    except (OSError, ValueError) as e:
        raise CarryError(f"{str(man_path)!r}: cannot read the manifest ({e})") from None
    parts = []
    for c in manifest["chunks"]:
        path = src / c["file"]
        if not path.is_file():
            raise CarryError(f"chunk {str(path)!r} is missing ({len(manifest['chunks'])} chunks in {man_path.name})")
        part = path.read_bytes()
        if not _matches(part, c):
            raise CarryError(f"chunk {str(path)!r} is damaged: its size or SHA-256 differs from {man_path.name}")
        parts.append(part)
    data = b"".join(parts)
    if _sha256(data) != manifest["sha256"]:
        raise CarryError(f"the joined chunks of {man_path.name} do not match its SHA-256")
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for member in tar.getmembers():
            rel = _run_file(member, man_path.name, depth=2)
            if _kept(root, rel):
                continue
            atomic_write_bytes(root / rel, tar.extractfile(member).read())  # a newer checkpoint replaces an older
            written.append(rel.as_posix())
    return written


def gather(sources: Sequence[str | Path], into: str | Path, max_bytes: int | None = None,
           name: str = "carry") -> list[Path]:
    """One carry's manifest and chunks, returned over several calls (``sources``: their output
    folders, in any order), checked and copied into ``into``; with ``max_bytes`` (what one call
    carries out beside the working tree) cut anew into one chunk a folder, ``into``, ``<into>+2``,
    ``<into>+3`` ..., each of at most ``max_bytes`` with the manifest in the first (the device
    calls' set-up joins them again): the 15 MiB chunks that suit the 8 files a call returns would
    leave each folder up to a chunk short. Returns the folders written."""
    _check_max_bytes(max_bytes)
    srcs = [Path(s) for s in sources]
    for s in srcs:
        if not s.is_dir():
            raise CarryError(f"source {str(s)!r} is not a folder")
    manifests = {m.read_bytes(): m for s in srcs for m in [s / f"{name}.json"] if m.is_file()}
    if len(manifests) != 1:
        found = ", ".join(repr(str(m)) for m in manifests.values()) or "none"
        raise CarryError(f"the sources hold {len(manifests)} different {name}.json ({found}); give one carry's calls")
    man_bytes, man_path = next(iter(manifests.items()))
    manifest = json.loads(man_bytes)
    parts, missing = [], []
    for c in manifest["chunks"]:
        found = [s / c["file"] for s in srcs if (s / c["file"]).is_file()]
        good = next((data for data in (f.read_bytes() for f in found) if _matches(data, c)), None)
        if good is not None:
            parts.append(good)
        elif found:
            raise CarryError(f"chunk {str(found[0])!r} is damaged: its size or SHA-256 differs from {man_path}")
        else:
            missing.append(c["file"])
    if missing:
        raise CarryError(f"{len(missing)} chunk(s) of {man_path} are in none of the sources: {', '.join(missing)}")
    data = b"".join(parts)
    if _sha256(data) != manifest["sha256"]:
        raise CarryError(f"the joined chunks of {man_path} do not match its SHA-256")
    if max_bytes is None:
        folders = [[(man_path.name, man_bytes), *((c["file"], p) for c, p in zip(manifest["chunks"], parts))]]
    else:
        folders = _one_chunk_a_folder(manifest, data, max_bytes, name)
    out = Path(into)
    targets = [out] + [out.with_name(f"{out.name}+{i}") for i in range(2, len(folders) + 1)]
    for target in targets:
        if target.exists() and any(target.iterdir()):
            raise CarryError(f"{str(target)!r} is not empty: gather into a new folder")
    for target, files in zip(targets, folders):
        target.mkdir(parents=True, exist_ok=True)
        for file_name, part in files:
            (target / file_name).write_bytes(part)
    return targets


def _one_chunk_a_folder(manifest: dict, data: bytes, max_bytes: int, name: str) -> list[list[tuple[str, bytes]]]:
    """``data`` cut into chunks that fill folders of ``max_bytes``, one a folder, and the manifest
    (rewritten for them, the first folder's file) first: [[(file name, bytes), ...] a folder]."""
    head = 0  # the manifest's size, which depends on how many chunks it lists
    while True:
        if max_bytes - head < 1:
            raise CarryError(f"max_bytes={max_bytes} leaves no room beside the {head}-byte manifest")
        cuts = [0, *range(max_bytes - head, len(data), max_bytes), len(data)]
        pieces = [data[a:b] for a, b in zip(cuts, cuts[1:])]
        chunks = _chunk_entries(pieces, name)
        man = (json.dumps({**manifest, "chunks": chunks}, indent=2, sort_keys=True) + "\n").encode()
        if len(man) <= head:
            folders = [[(c["file"], p)] for c, p in zip(chunks, pieces)]
            folders[0].insert(0, (f"{name}.json", man))
            return folders
        head = len(man)


def call_bytes(folders: Sequence[str | Path], repo: str | Path = ".") -> tuple[int, dict[str, int]]:
    """What one device call carries out: the working tree as it goes (tracked files that exist and
    untracked ones git does not ignore, under ``repo``) and each carried folder, in bytes."""
    root = Path(repo)
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise CarryError(f"{str(root)!r}: cannot list the working tree with git ({e})") from None
    tree = sum((root / f).lstat().st_size for f in set(listed.decode().split("\0")) - {""}
               if (root / f).is_file() or (root / f).is_symlink())
    sizes = {}
    for d in folders:
        path = root / d
        if not path.is_dir():
            raise CarryError(f"carried folder {str(d)!r} is not a folder under {str(root)!r}")
        sizes[str(d)] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return tree, sizes


def land(archives: Sequence[str | Path], store_root: str | Path) -> dict:
    """The complete runs of results archives (``<profile>/<run id>/...`` members, oldest archive
    first: a later one's file replaces an earlier one's) written into ``store_root``, whose folder
    name must be the profile. Returns ``landed`` and ``stored`` (run ids; already complete there,
    left as they are) and ``incomplete`` (run id -> why it was left out)."""
    root = Path(store_root)
    if not root.is_dir():
        raise CarryError(f"store {str(root)!r} is not a folder")
    runs: dict[str, dict[str, bytes]] = {}
    for a in archives:
        path = Path(a)
        if path.is_dir():
            path = path / "paper.tar.gz"
        try:
            with tarfile.open(path, mode="r:*") as tar:
                for member in tar.getmembers():
                    if member.isdir():
                        continue
                    rel = _run_file(member, repr(str(path)), depth=3)
                    if rel.parts[0] != root.name:
                        raise CarryError(f"{str(path)!r} holds profile {rel.parts[0]!r}, not {root.name!r} "
                                         f"(the store {str(root)!r})")
                    if rel.parts[1].startswith("."):  # the store's lock files
                        continue
                    runs.setdefault(rel.parts[1], {})[Path(*rel.parts[2:]).as_posix()] = \
                        tar.extractfile(member).read()
        except (OSError, tarfile.TarError) as e:
            raise CarryError(f"{str(path)!r}: cannot read the results archive ({e})") from None
    out: dict = {"landed": [], "stored": [], "incomplete": {}}
    for rid, files in sorted(runs.items()):
        if incomplete_reason(root / rid) is None:
            out["stored"].append(rid)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            check = Path(tmp) / rid
            for name, data in files.items():
                (check / name).parent.mkdir(parents=True, exist_ok=True)
                (check / name).write_bytes(data)
            reason = incomplete_reason(check)
        if reason is not None:
            out["incomplete"][rid] = reason
            continue
        for name in sorted(files, key=lambda n: n == "result.json"):  # result.json last: complete from there on
            atomic_write_bytes(root / rid / name, files[name])
        out["landed"].append(rid)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m greenlib.scaleout.carry", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="interrupted runs with a checkpoint, and weights asked for, into chunks")
    a.add_argument("store")
    a.add_argument("out")
    a.add_argument("--weights", action="append", default=[], metavar="RUN_ID_GLOB",
                   help="complete runs whose model.pt goes too (e.g. 'teacher-*'), repeatable")
    a.add_argument("--chunk-mib", type=float, default=CHUNK_BYTES / 2**20)
    a.add_argument("--max-mib", type=float, default=None,
                   help="pack interrupted runs, then weights, smallest first, while the total stays under this")
    a.add_argument("--changed-since", metavar="FILE", default=None,
                   help="only checkpoints, weights and ended runs written after FILE was (e.g. a mark touched "
                        "at unpack)")
    b = sub.add_parser("unpack", help="check, join and restore chunks into a store")
    b.add_argument("src")
    b.add_argument("store")
    g = sub.add_parser("gather", help="one carry's chunks from several calls' outputs into folders of one call each")
    g.add_argument("sources", nargs="+", help="the calls' output folders holding the carry's files")
    g.add_argument("--into", required=True, help="the first folder (e.g. .cr7); the next ones are .cr7+2, ...")
    g.add_argument("--max-mib", type=float, default=None,
                   help="at most this much a folder (one call out: 63 less the tree that callsize prints)")
    z = sub.add_parser("callsize", help="what each of the next device calls carries out, checked against 64 MiB")
    z.add_argument("calls", nargs="+", metavar="FOLDERS",
                   help="one call's carried folders, comma-separated (e.g. .pa3,.whs; '-' for none), a call each")
    d = sub.add_parser("land", help="the complete runs of the calls' results archives into the committed store")
    d.add_argument("archives", nargs="+",
                   help="paper.tar.gz files, or the calls' output folders holding one, oldest first")
    d.add_argument("--into", required=True, help="the store, e.g. data/results/paper")
    args = p.parse_args(argv)
    try:
        if args.cmd == "pack":
            since = None
            if args.changed_since is not None:
                try:
                    since = Path(args.changed_since).stat().st_mtime
                except OSError:
                    raise CarryError(f"--changed-since {args.changed_since!r}: no such file") from None
            m = pack(args.store, args.out, args.weights, int(args.chunk_mib * 2**20),
                     max_bytes=None if args.max_mib is None else int(args.max_mib * 2**20), changed_since=since)
            print(f"packed {len(m['files'])} files, {m['bytes'] / 2**20:.1f} MiB in {len(m['chunks'])} chunk(s) "
                  f"-> {args.out}")
            for f in m["files"]:
                print(f"  {f}")
            for rid, size in m["left_out"].items():
                print(f"  LEFT OUT (over --max-mib {args.max_mib}): {rid}, {size / 2**20:.1f} MiB")
        elif args.cmd == "gather":
            folders = gather(args.sources, args.into, None if args.max_mib is None else int(args.max_mib * 2**20))
            for f in folders:
                print(f"{f}: {sum(x.stat().st_size for x in f.iterdir()) / 2**20:.1f} MiB, "
                      f"{len(list(f.iterdir()))} files")
        elif args.cmd == "callsize":
            over, calls = [], [[] if call == "-" else call.split(",") for call in args.calls]
            tree, sizes = call_bytes([d for names in calls for d in names])  # the tree listed once for all calls
            for i, (call, names) in enumerate(zip(args.calls, calls), 1):
                total = tree + sum(sizes[d] for d in names)
                parts = " + ".join(f"{d} {sizes[d] / 2**20:.1f}" for d in names)
                print(f"call {i}: {total / 2**20:.1f} MiB (the working tree {tree / 2**20:.1f}"
                      f"{' + ' + parts if parts else ''}) of {CALL_BYTES / 2**20:.0f}")
                if total > CALL_BYTES:
                    over.append(f"call {i} ({call}) carries {total / 2**20:.1f} MiB")
            if over:
                raise CarryError(f"{'; '.join(over)}, over the {CALL_BYTES / 2**20:.0f} MiB a call carries out; "
                                 f"leave more of the tree out or split the folder")
        elif args.cmd == "land":
            res = land(args.archives, args.into)
            for rid in res["landed"]:
                print(f"landed {rid}")
            for rid in res["stored"]:
                print(f"already complete in {args.into}, left as it is: {rid}")
            for rid, why in res["incomplete"].items():
                print(f"not complete, left out: {rid} ({why})")
        else:
            written = unpack(args.src, args.store)
            print(f"restored {len(written)} files into {args.store}")
    except CarryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

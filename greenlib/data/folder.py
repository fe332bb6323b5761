"""ImageFolder archives and folders: read, check, decode in parallel processes, cache as uint8.

A source is a tar archive (``.tar``, ``.tar.xz``, ``.tar.gz``, ``.tgz``), a ``.zip`` or a directory,
laid out as ``[top/]train/<class>/<image>`` and ``[top/]test/<class>/<image>`` (at most one top
folder). Class folders sort by name and a class's label is its index in that order (torchvision's
ImageFolder convention). Every image must be 32x32 RGB. Hidden files, ``__MACOSX`` and files whose
extension is not an image's (:data:`IMAGE_EXTENSIONS`) are skipped.

Order within a split (what ``Dataset.subset`` prefixes take):

- **release order** where every file name of the split is an integer and together they are
  ``0..N-1`` (``train/cattle/00000.png`` is image 0): sorted by that number, so a CIFAR archive
  written from the release keeps the release order;
- otherwise **round-robin over classes**: the first file of every class (in class order), then the
  second of every class, ..., files ordered by name within a class (numbers compared as numbers).
  Deterministic, and every prefix is balanced to within one image per class.

:func:`load_folder` decodes once and caches the uint8 arrays in ``cache_dir`` under the source's
sha256, so a changed archive is decoded again and an unchanged one loads in about a second.
"""
from __future__ import annotations

import hashlib
import io
import lzma
import os
import re
import tarfile
import warnings
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..io import atomic_write_bytes

SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_PX = 32
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".gif", ".tif", ".tiff"})
LOSSY_EXTENSIONS = frozenset({".jpg", ".jpeg", ".webp"})
TAR_SUFFIXES: tuple[str, ...] = (".tar", ".tar.xz", ".tar.gz", ".tgz")
ARCHIVE_SUFFIXES: tuple[str, ...] = (*TAR_SUFFIXES, ".zip")
ORDER_RELEASE = "release order (file name = index in the split)"
ORDER_ROUND_ROBIN = "round-robin over classes, file-name order within a class"
CACHE_VERSION = 1  # bump whenever decoding or the cache's layout changes (it names the cache file)
PARALLEL_MIN_IMAGES = 2048  # fewer images decode in this process (a pool costs a second to start)
_CHUNKS_PER_WORKER = 4


class DatasetError(ValueError):
    """A dataset that cannot be loaded (missing, corrupt, download failed); one-line message."""


class FolderError(DatasetError):
    """An ImageFolder source that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class FolderData:
    """What one source decodes to. ``*_x``: uint8 NCHW; ``*_y``: int64 labels (class index)."""

    source: str  # the archive's (or folder's) file name, never a machine's path
    source_sha256: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    order: dict[str, str]  # per split: ORDER_RELEASE or ORDER_ROUND_ROBIN
    pixel_sha256: dict[str, str]  # per split: sha256 of the uint8 HWC pixels, concatenated in order
    lossy: bool  # some image is stored in a lossy format (JPEG, WebP)


def is_source(path: Path) -> bool:
    """Whether ``path`` is itself an ImageFolder source: an archive file, or a directory with train/ and test/."""
    if path.is_file():
        return path.name.lower().endswith(ARCHIVE_SUFFIXES)
    return path.is_dir() and all((path / s).is_dir() for s in SPLITS)


def _kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "dir"
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    raise FolderError(f"{path.name}: not an ImageFolder source; accepted: a {', '.join(ARCHIVE_SUFFIXES)} archive "
                      "or a directory holding train/ and test/")


# --------------------------------------------------------------------------------------------
# Checksum
# --------------------------------------------------------------------------------------------
def _dir_files(path: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
        out += [Path(dirpath) / f for f in sorted(filenames) if not _skipped(f)]
    return out


def source_checksum(path: Path) -> str:
    """sha256 of an archive's bytes; for a directory, of every file's relative path and bytes in name order."""
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    for p in _dir_files(path):
        h.update(p.relative_to(path).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Reading the members
# --------------------------------------------------------------------------------------------
def _skipped(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _place(rel: str, is_dir: bool) -> tuple[str, str | None, str | None] | None:
    """``(split, class, file)`` of a member path (class/file None for a split's or class's own folder)."""
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(_skipped(p) for p in parts):
        return None
    top = 1 if parts[0] not in SPLITS and len(parts) > 1 and parts[1] in SPLITS else 0  # one folder above
    rest = parts[top:]
    if rest[0] not in SPLITS:
        return None
    if is_dir:
        return (rest[0], rest[1] if len(rest) == 2 else None, None) if len(rest) <= 2 else None
    return (rest[0], rest[1], rest[2]) if len(rest) == 3 else None


def _members(path: Path, kind: str) -> Iterator[tuple[str, bool, bytes | None]]:
    """``(relative path, is_dir, bytes or None)`` of every member, in the source's own order."""
    if kind == "dir":
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
            yield Path(dirpath).relative_to(path).as_posix(), True, None
            for f in sorted(filenames):
                p = Path(dirpath) / f
                yield p.relative_to(path).as_posix(), False, (p.read_bytes() if _wanted(f) else None)
    elif kind == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                is_dir = info.is_dir()
                yield info.filename, is_dir, (zf.read(info) if not is_dir and _wanted(info.filename) else None)
    else:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if m.isdir():
                    yield m.name, True, None
                elif m.isfile():
                    f = tf.extractfile(m) if _wanted(m.name) else None
                    yield m.name, False, (f.read() if f is not None else None)


def _wanted(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error, EOFError, OSError)


def read_source(path: Path) -> tuple[dict[str, dict[str, list[tuple[str, bytes]]]], set[str]]:
    """Every image of ``path`` as ``{split: {class: [(file name, bytes)]}}``; class folders with no
    image appear with an empty list. Also the splits whose folder was seen. Raises FolderError."""
    kind = _kind(path)
    files: dict[str, dict[str, list[tuple[str, bytes]]]] = {s: {} for s in SPLITS}
    seen: set[str] = set()
    try:
        for rel, is_dir, blob in _members(path, kind):
            where = _place(rel, is_dir)
            if where is None:
                continue
            split, cls, fname = where
            seen.add(split)
            if cls is not None:
                bucket = files[split].setdefault(cls, [])
                if fname is not None and blob is not None:
                    bucket.append((fname, blob))
    except _CORRUPT as e:
        reason = (str(e).splitlines() or [""])[0][:200]
        raise FolderError(f"{path.name}: corrupt or unreadable archive ({type(e).__name__}: {reason})") from None
    return files, seen


def check_layout(name: str, files: dict[str, dict[str, list]], seen: set[str]) -> tuple[str, ...]:
    """The sorted class names, after checking both splits exist, share their classes and have no empty class."""
    for split in SPLITS:
        if not files[split]:
            why = "holds no class folder" if split in seen else "is missing"
            raise FolderError(f"{name}: split {split}/ {why}; an ImageFolder source needs "
                              "train/<class>/<image> and test/<class>/<image>")
    for split in SPLITS:
        empty = sorted(c for c, imgs in files[split].items() if not imgs)
        if empty:
            raise FolderError(f"{name}: class {empty[0]!r} of {split}/ holds no image "
                              f"({len(empty)} empty class{'es' if len(empty) > 1 else ''} in {split}/)")
    train, test = set(files["train"]), set(files["test"])
    if train != test:
        only_train, only_test = sorted(train - test), sorted(test - train)
        raise FolderError(f"{name}: train/ and test/ have different classes: only in train/: "
                          f"{only_train[:5] or 'none'}, only in test/: {only_test[:5] or 'none'}")
    return tuple(sorted(train))


def _natural(name: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name))


def order_split(by_class: dict[str, list[tuple[str, bytes]]], classes: tuple[str, ...]
                ) -> tuple[list[tuple[str, bytes]], np.ndarray, str]:
    """``(items, labels, order)`` of one split: items ``(class/file, bytes)`` in the split's order."""
    flat = [(f"{c}/{f}", b, label, f) for label, c in enumerate(classes) for f, b in by_class[c]]
    stems = [Path(f).stem for *_, f in flat]
    if all(s.isdigit() for s in stems) and sorted(map(int, stems)) == list(range(len(stems))):
        ranked = sorted(zip(map(int, stems), flat))
        items, order = [t for _, t in ranked], ORDER_RELEASE
    else:
        keyed = []
        for label, c in enumerate(classes):
            inner = sorted(by_class[c], key=lambda fb: _natural(fb[0]))
            keyed += [(rank, label, (f"{c}/{f}", b, label, f)) for rank, (f, b) in enumerate(inner)]
        keyed.sort(key=lambda t: (t[0], t[1]))
        items, order = [t for *_, t in keyed], ORDER_ROUND_ROBIN
    labels = np.fromiter((t[2] for t in items), dtype=np.int64, count=len(items))
    return [(t[0], t[1]) for t in items], labels, order


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------
def _decode_chunk(items: list[tuple[str, bytes]]) -> np.ndarray:
    """(n, 32, 32, 3) uint8 from encoded images; FolderError names the first bad one."""
    from PIL import Image

    out = np.empty((len(items), IMAGE_PX, IMAGE_PX, 3), dtype=np.uint8)
    for i, (name, blob) in enumerate(items):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                im.load()
                size, mode = im.size, im.mode
                if size == (IMAGE_PX, IMAGE_PX) and mode == "RGB":
                    out[i] = np.asarray(im)
        except (OSError, SyntaxError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
            raise FolderError(f"{name}: not a readable image ({type(e).__name__}: {str(e)[:120]})") from None
        if size != (IMAGE_PX, IMAGE_PX) or mode != "RGB":
            raise FolderError(f"{name}: a {size[0]}x{size[1]} {mode} image; every image must be "
                              f"{IMAGE_PX}x{IMAGE_PX} RGB")
    return out


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode(items: list[tuple[str, bytes]], workers: int | None = None) -> np.ndarray:
    """Decode ``items`` to (N, 32, 32, 3) uint8 in their order, in ``workers`` processes (None: the
    usable CPUs; fewer than :data:`PARALLEL_MIN_IMAGES` images decode here)."""
    workers = usable_cpus() if workers is None else max(1, int(workers))
    if workers == 1 or len(items) < PARALLEL_MIN_IMAGES:
        return _decode_chunk(items)
    n_chunks = workers * _CHUNKS_PER_WORKER
    step = -(-len(items) // n_chunks)
    chunks = [items[i:i + step] for i in range(0, len(items), step)]
    # spawn, not fork: the caller may hold threads (a Jupyter kernel, torch), and fork copies locks.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        return np.concatenate(list(pool.map(_decode_chunk, chunks)))


def pixel_sha256(x_nhwc: np.ndarray) -> str:
    """sha256 of uint8 HWC images concatenated in order (what cifar100-png.json publishes)."""
    return hashlib.sha256(np.ascontiguousarray(x_nhwc, dtype=np.uint8).data).hexdigest()


def build(path: Path, source_sha256: str, workers: int | None = None) -> FolderData:
    """Read, check and decode ``path`` (no cache). Raises FolderError (one line) for a bad source."""
    files, seen = read_source(path)
    classes = check_layout(path.name, files, seen)
    out: dict[str, object] = {}
    order, sums, lossy = {}, {}, False
    for split in SPLITS:
        items, labels, order[split] = order_split(files[split], classes)
        lossy = lossy or any(Path(n).suffix.lower() in LOSSY_EXTENSIONS for n, _ in items)
        x = decode([(f"{path.name}:{split}/{n}", b) for n, b in items], workers)
        sums[split] = pixel_sha256(x)
        out[f"{split}_x"] = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.from_numpy(labels)
        del files[split], items
    return FolderData(source=path.name, source_sha256=source_sha256, classes=classes, order=order,
                      pixel_sha256=sums, lossy=lossy, **out)


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------
def cache_path(cache_dir: Path, source_sha256: str) -> Path:
    return Path(cache_dir) / f"imagefolder-v{CACHE_VERSION}-{source_sha256[:32]}.pt"


def _write_cache(path: Path, d: FolderData) -> None:
    buf = io.BytesIO()
    torch.save({"version": CACHE_VERSION, "source": d.source, "source_sha256": d.source_sha256,
                "classes": list(d.classes), "order": dict(d.order), "pixel_sha256": dict(d.pixel_sha256),
                "lossy": d.lossy, "train_x": d.train_x, "train_y": d.train_y, "test_x": d.test_x,
                "test_y": d.test_y}, buf)
    atomic_write_bytes(path, buf.getvalue())


def _read_cache(path: Path, source: str, source_sha256: str) -> FolderData:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("version") != CACHE_VERSION or blob.get("source_sha256") != source_sha256:
        raise ValueError(f"holds version {blob.get('version')} of source {str(blob.get('source_sha256'))[:12]}, "
                         f"expected version {CACHE_VERSION} of {source_sha256[:12]}")
    for split in SPLITS:
        x, y = blob[f"{split}_x"], blob[f"{split}_y"]
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != (3, IMAGE_PX, IMAGE_PX) or len(y) != len(x):
            raise ValueError(f"{split} arrays of shape {tuple(x.shape)} / {tuple(y.shape)}")
    return FolderData(source=source, source_sha256=source_sha256, classes=tuple(blob["classes"]),
                      order=dict(blob["order"]), pixel_sha256=dict(blob["pixel_sha256"]), lossy=bool(blob["lossy"]),
                      train_x=blob["train_x"], train_y=blob["train_y"], test_x=blob["test_x"], test_y=blob["test_y"])


def load_folder(path: str | Path, cache_dir: str | Path, workers: int | None = None) -> FolderData:
    """The decoded images of ``path``, from ``cache_dir`` when decoded before (keyed by the source's
    sha256), else decoded in ``workers`` processes and cached (written atomically). A cache that
    cannot be read is rebuilt, with a warning. Raises FolderError for a missing or bad source."""
    path = Path(path)
    if not path.exists():
        raise FolderError(f"{path}: no such archive or folder")
    _kind(path)
    sha = source_checksum(path)
    cache = cache_path(Path(cache_dir), sha)
    if cache.exists():
        try:
            return _read_cache(cache, path.name, sha)
        except Exception as e:  # re-creatable: say so, then decode again
            reason = (str(e).splitlines() or [""])[0][:200]
            warnings.warn(f"dataset cache {cache} is unreadable ({type(e).__name__}: {reason}); decoding again",
                          RuntimeWarning, stacklevel=2)
    data = build(path, sha, workers)
    _write_cache(cache, data)
    return data

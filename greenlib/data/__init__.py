"""Datasets and the loaders that feed them to a trainer.

Datasets (:data:`DATASETS`) of 3x32x32 uint8 images, returned as a :class:`Dataset` of CPU tensors:
``cifar100`` and its stand-in ``synthetic`` (100 classes), ``cifar10``, its JPEG copy
``cifar10-jpeg`` and the stand-in ``synthetic10`` (10 classes; NAS searches on them for the paper's
second NAS rows), and ``imagefolder``: any 32x32 RGB ImageFolder archive, your own data.
:func:`variant` maps a dataset to its counterpart with other classes.

- ``cifar100`` / ``cifar10``: the real data, from an ImageFolder archive at the dataset location
  (``data_root``, else ``$GREENLIB_DATASETS``, else ``data/datasets/``; :mod:`greenlib.data.locate`)
  or from torchvision's files in ``data/<name>/``, downloaded only on request
  (``python -m greenlib.data download cifar100``). ``cifar100`` must reproduce the release's pixel
  sha256, whatever its source. Archives are decoded once, in parallel processes, and cached as
  uint8 keyed by the archive's sha256 (:mod:`greenlib.data.folder`). When neither is there,
  :class:`DatasetError` names the three ways to provide it in one line.
- ``cifar10-jpeg``: CIFAR-10 as JPEG (lossy), its own name, captioned "CIFAR-10 (JPEG copy, lossy)".
- ``imagefolder``: the archive or folder the location points at, checked (both splits, same
  classes, no empty class, every image 32x32 RGB).
- ``synthetic``: an offline stand-in the repo generates from a seed in a second or two and caches
  in ``paths.cache_dir()``. Same shapes and counts, so one epoch costs what a CIFAR-100 epoch
  costs; accuracies are NOT comparable with CIFAR-100 (see ``docs/datasets.md``).
- ``cifar10`` / ``synthetic10``: the same for CIFAR-10 (``data/cifar10/``) and a 10-class stand-in:
  10 of the stand-in's 100 classes (one from each of 10 different groups), with images of their own.

Two loader kinds (:data:`LOADER_KINDS`), built by :func:`make_loaders`, both yielding
``(x, y)``: ``x`` float32 NCHW normalised on the device, ``y`` int64 on the device:

- ``gpu`` (:class:`GPULoader`): the dataset lives on the device and the augmentation (random crop
  with 4-px zero padding, horizontal flip) runs there on whole batches, as in
  KellerJordan/cifar10-airbench.
- ``dataloader`` (:class:`TorchvisionLoader`): the classic path, torchvision.transforms.v2 per
  image in ``DataLoader`` workers, batches copied to the device.

Both kinds visit the samples in the same order for a given ``(seed, epoch)`` and draw their crop
offsets and flips from the same distribution (the draws themselves differ). Padding is 0 in the
uint8 image, before normalisation, exactly as ``RandomCrop(32, padding=4)`` does; after
normalisation a padded pixel therefore reads ``-mean / std`` per channel.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import paths
from ..io import atomic_write_bytes
from . import folder, locate
from .folder import DatasetError, FolderError, pixel_sha256

DATASETS: tuple[str, ...] = ("synthetic", "cifar100", "synthetic10", "cifar10", "cifar10-jpeg", "imagefolder")
CLASSES: dict[str, int] = {"synthetic": 100, "cifar100": 100, "synthetic10": 10, "cifar10": 10, "cifar10-jpeg": 10}
# The same kind of data with 100 or 10 classes: the first candidate that is available, else the
# first (whose loading then says how to provide it). 100 for imagefolder means "itself" (NAS's
# search_classes=100 searches on the dataset itself).
_VARIANTS: dict[str, dict[int, tuple[str, ...]]] = {
    "synthetic": {100: ("synthetic",), 10: ("synthetic10",)},
    "synthetic10": {100: ("synthetic",), 10: ("synthetic10",)},
    "cifar100": {100: ("cifar100",), 10: ("cifar10", "cifar10-jpeg")},
    "cifar10": {100: ("cifar100",), 10: ("cifar10",)},
    "cifar10-jpeg": {100: ("cifar100",), 10: ("cifar10-jpeg",)},
    "imagefolder": {100: ("imagefolder",)},
}
# The CIFAR-100 release's pixels: sha256 of the uint8 HWC images concatenated in release order
# (shared/datasets/cifar100-png.json; torchvision's files give the same).
CIFAR100_PIXEL_SHA256: dict[str, str] = {
    "train": "4e457917601a66aed021f5fa37957b56c6319557c0a8ed5484de3c390af45430",
    "test": "4cb8e5d9309da489bf6b19cc10cd96c3ae6f8daf225380b605aaee4c0d6aee19",
}


@dataclass(frozen=True)
class RealSpec:
    """A dataset read from files: what it is called, what it must hold and where it may come from."""

    title: str  # caption
    num_classes: int | None  # None: whatever the source holds
    counts: tuple[int, int] | None  # (train, test) images it must hold, or None
    torchvision: str | None  # torchvision's dataset class for its original files, or None
    torchvision_folder: str | None  # the folder torchvision's files live in, inside data/<name>/
    lossy: bool | None  # True: a lossy copy; False: lossy files are refused; None: either
    release_sha256: dict[str, str] | None  # pixels it must reproduce, or None


REAL: dict[str, RealSpec] = {
    "cifar100": RealSpec("CIFAR-100", 100, (50_000, 10_000), "CIFAR100", "cifar-100-python", False,
                         CIFAR100_PIXEL_SHA256),
    "cifar10": RealSpec("CIFAR-10", 10, (50_000, 10_000), "CIFAR10", "cifar-10-batches-py", False, None),
    "cifar10-jpeg": RealSpec("CIFAR-10 (JPEG copy, lossy)", 10, (50_000, 10_000), None, None, True, None),
    "imagefolder": RealSpec("ImageFolder", None, None, None, None, None, None),
}
LOADER_KINDS: tuple[str, ...] = ("gpu", "dataloader")

IMAGE_PX = 32  # CIFAR images are 32x32
PAD_PX = 4  # RandomCrop(32, padding=4)
NUM_CLASSES = 100  # the stand-in's classes (synthetic10 takes 10 of them: SYNTHETIC10_CLASSES)
TRAIN_SIZE = 50_000  # images in the CIFAR-100 training set
TEST_SIZE = 10_000  # images in the CIFAR-100 test set

SYNTHETIC_VERSION = 1  # bump whenever the generator's output changes (it names the cache file)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Images and labels of one dataset, on the CPU.

    ``*_x``: uint8 NCHW (N, 3, 32, 32); ``*_y``: int64 (N,) in ``[0, num_classes)``.
    ``mean`` / ``std``: per-channel statistics of the full training set in [0, 1] units (what
    ``Normalize`` takes); a :meth:`subset` keeps them. ``description``: one line for captions.
    ``source``: where the images came from (an archive's file name, torchvision's files, generated);
    ``provenance``: the full set's counts, pixel sha256 per split, order and checks (:meth:`record`).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str
    source: str = ""
    provenance: dict | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            _check_images(getattr(self, f"{split}_x"), getattr(self, f"{split}_y"), where=f"{self.name}.{split}")

    def subset(self, train_size: int | None, test_size: int | None) -> "Dataset":
        """The first ``train_size`` training and ``test_size`` test images (``None``: all of them).

        Prefixes, not random draws: the synthetic set is ordered so every prefix is class-balanced
        to within one image per class (CIFAR-100's own order is already shuffled). Raises
        ValueError for a size that is not an int in ``1..len(split)`` or None.
        """
        n_train = _check_size("train_size", train_size, len(self.train_y))
        n_test = _check_size("test_size", test_size, len(self.test_y))
        if n_train == len(self.train_y) and n_test == len(self.test_y):
            return self
        return Dataset(
            name=self.name,
            train_x=self.train_x[:n_train], train_y=self.train_y[:n_train],
            test_x=self.test_x[:n_test], test_y=self.test_y[:n_test],
            num_classes=self.num_classes, mean=self.mean, std=self.std,
            description=f"{self.description}; first {n_train:,} train / {n_test:,} test images",
            source=self.source, provenance=self.provenance,
        )

    def record(self) -> dict:
        """The dataset record a run's environment holds: name, description, source, counts of the
        full set and of what is used, pixel sha256 per split of the full set in its order (release
        order where there is one), the order, and whether the pixels match a published release."""
        p = self.provenance or {}
        return {"name": self.name, "description": self.description, "source": self.source,
                "source_sha256": p.get("source_sha256"), "classes": self.num_classes,
                "images": p.get("images"), "used": {"train": len(self.train_y), "test": len(self.test_y)},
                "pixel_sha256": p.get("pixel_sha256"), "order": p.get("order"),
                "release_verified": p.get("release_verified")}

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.train_x.shape)}, test={tuple(self.test_x.shape)}, "
                f"num_classes={self.num_classes}, description={self.description!r})")


def _check_size(name: str, value: int | None, n: int) -> int:
    if value is None:
        return n
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= n:
        raise ValueError(f"{name}={value!r} is not accepted; accepted: an int in 1..{n:,} or None (all)")
    return int(value)


def _check_images(x: torch.Tensor, y: torch.Tensor, where: str = "images") -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        dtype = x.dtype if isinstance(x, torch.Tensor) else None
        raise ValueError(f"{where}: images must be a uint8 tensor (N, 3, H, W); got {shape} {dtype}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"{where}: labels must be an int64 tensor (N,) with N={len(x)}; got {shape}")


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units, rounded to 4 decimals.

    Exact and fast: from each channel's 256-bin histogram rather than a float pass over the pixels.
    """
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        p = hist / hist.sum()
        mean = float((p * levels).sum())
        means.append(round(mean, 4))
        stds.append(round(math.sqrt(max(float((p * (levels - mean) ** 2).sum()), 0.0)), 4))
    return tuple(means), tuple(stds)


def variants(name: str, num_classes: int) -> tuple[str, ...]:
    """Every dataset :func:`variant` may pick for ``name`` with ``num_classes`` classes, wherever the
    files are: what a run stored elsewhere may have used (``variants("cifar100", 10)`` is
    ``("cifar10", "cifar10-jpeg")``). ValueError names a bad name or class count."""
    if name not in _VARIANTS:
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
    if num_classes not in _VARIANTS[name]:
        raise ValueError(f"num_classes={num_classes!r} has no {name} variant; accepted: "
                         f"{', '.join(map(str, _VARIANTS[name]))}")
    return _VARIANTS[name][num_classes]


def variant(name: str, num_classes: int, data_root: str | Path | None = None) -> str:
    """The dataset like ``name`` with ``num_classes`` classes: ``variant("synthetic", 10) == "synthetic10"``;
    ``variant("cifar100", 10)`` is ``cifar10`` where its files or archive are found, else
    ``cifar10-jpeg`` where only the JPEG copy is found at the location (``data_root``, see
    :mod:`greenlib.data.locate`), else ``cifar10``. ValueError names a bad name or class count."""
    candidates = variants(name, num_classes)
    for c in candidates:
        if c == name or available(c, data_root, named_only=True):
            return c
    return candidates[0]


def available(name: str, data_root: str | Path | None = None, named_only: bool = False) -> bool:
    """Whether ``name`` can be loaded without a download (nothing is decoded to tell)."""
    if name.startswith("synthetic"):
        return True
    spec = REAL[name]
    if locate.find(name, data_root, named_only=named_only) is not None:
        return True
    return spec.torchvision_folder is not None and (paths.data_dir() / name / spec.torchvision_folder).is_dir()


def auto_dataset(data_root: str | Path | None = None) -> tuple[str, str]:
    """What ``dataset="auto"`` (the smoke profile's default) means here: ``cifar100`` where it is found
    (its archive at the location, or torchvision's files), else the stand-in ``synthetic``; and the
    one line that says which, and why."""
    if available("cifar100", data_root):
        found = locate.find("cifar100", data_root)
        source = found.name if found is not None else "torchvision files"
        return "cifar100", f"dataset: cifar100 (real, subsets; from {source})"
    return "synthetic", (f"dataset: synthetic stand-in (CIFAR-100 archive not found: no cifar100-png.tar.xz at "
                         f"{locate.describe(data_root)}; set ${locate.ENV_VAR} or data_root, see docs/datasets.md)")


def load_dataset(name: str, seed: int = 0, download: bool = False, root: str | Path | None = None,
                 data_root: str | Path | None = None, workers: int | None = None) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) as CPU tensors.

    ``synthetic`` / ``synthetic10``: generated from ``seed`` (an int >= 0) and cached in ``root``
    (default ``paths.cache_dir()``); a cache that cannot be read is regenerated, with a warning.
    ``download`` is ignored: nothing is fetched.

    Every other name is read from files; ``seed`` is ignored. First from an ImageFolder archive at
    the dataset location (``data_root``: a folder holding archives under their known names, or one
    archive; empty or None: ``$GREENLIB_DATASETS``, else ``data/datasets/``), decoded in ``workers``
    processes (None: the usable CPUs) and cached in ``paths.cache_dir()``; else (``cifar100``,
    ``cifar10``) by torchvision from ``root`` (default ``data/<name>/``), fetched from the internet
    only when ``download=True`` (which skips the archive).

    Raises ValueError for an unknown name or a bad seed, DatasetError (one line) when the data is
    missing (naming the three ways to provide it), corrupt, not what the name promises (the pixels
    of ``cifar100`` must match the release's; ``cifar10`` refuses a lossy copy), or its download fails.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
    if name.startswith("synthetic"):
        return _load_synthetic(seed, Path(root) if root is not None else paths.cache_dir(),
                               num_classes=CLASSES[name])
    spec = REAL[name]
    found = None if download else locate.find(name, data_root)
    if found is not None:
        return _load_archive(name, spec, found, workers)
    tv_root = Path(root) if root is not None else paths.data_dir() / name
    if spec.torchvision is not None and (download or (tv_root / spec.torchvision_folder).is_dir()):
        return _load_torchvision(name, spec, tv_root, download)
    raise DatasetError(_not_found(name, spec, data_root, tv_root))


def _not_found(name: str, spec: RealSpec, data_root, tv_root: Path) -> str:
    where = locate.describe(data_root)
    names = " / ".join(locate.known_names(name)[:2])
    if spec.torchvision is None:
        return (f"{spec.title} ({name}) not found: no {names} at {where}; point ${locate.ENV_VAR} or data_root "
                f"at the archive itself ({', '.join(folder.ARCHIVE_SUFFIXES)}) or a folder holding train/ and test/, "
                f"or at the folder holding {locate.known_names(name)[0]} (docs/datasets.md)")
    return (f"{spec.title} not found: no {names} at {where} and no torchvision files in {tv_root}; provide it "
            f"one of three ways: download it once with `{FETCH_COMMAND.replace('cifar100', name)}` (needs "
            f"internet), point ${locate.ENV_VAR} or data_root at the folder holding {locate.known_names(name)[0]} "
            "(docs/datasets.md), or run on the stand-in with dataset=synthetic")


# --------------------------------------------------------------------------------------------
# Real data from an ImageFolder archive or folder
# --------------------------------------------------------------------------------------------
def _load_archive(name: str, spec: RealSpec, path: Path, workers: int | None) -> Dataset:
    d = folder.load_folder(path, paths.cache_dir(), workers)
    counts = (len(d.train_y), len(d.test_y))
    what = f"{name} from {d.source}"
    if spec.num_classes is not None and len(d.classes) != spec.num_classes:
        raise DatasetError(f"{what}: {len(d.classes)} classes, expected {spec.num_classes}")
    if spec.lossy is False and d.lossy:
        hint = " (load the JPEG copy as dataset=cifar10-jpeg)" if name == "cifar10" else ""
        raise DatasetError(f"{what}: holds lossy (JPEG/WebP) images; {name} must be lossless{hint}")
    if spec.counts is not None and counts != spec.counts:
        raise DatasetError(f"{what}: {counts[0]:,} train / {counts[1]:,} test images, expected "
                           f"{spec.counts[0]:,} / {spec.counts[1]:,}")
    verified = _verify(what, spec, d.pixel_sha256)
    if name == "imagefolder":
        description = f"ImageFolder {d.source} ({len(d.classes)} classes)"
    elif spec.lossy:
        description = f"{spec.title}, from {d.source}"
    else:
        description = f"{spec.title} (from {d.source}{', pixels = the release' if verified else ''})"
    mean, std = _channel_stats(d.train_x)
    provenance = {"source_sha256": d.source_sha256, "images": {"train": counts[0], "test": counts[1]},
                  "pixel_sha256": dict(d.pixel_sha256), "order": dict(d.order), "release_verified": verified,
                  "class_names": list(d.classes)}
    return Dataset(name=name, train_x=d.train_x, train_y=d.train_y, test_x=d.test_x, test_y=d.test_y,
                   num_classes=len(d.classes), mean=mean, std=std, description=description,
                   source=d.source, provenance=provenance)


def _verify(what: str, spec: RealSpec, sums: dict[str, str]) -> bool | None:
    """True when the pixels match the release's, None when there is nothing to match; DatasetError otherwise."""
    if spec.release_sha256 is None:
        return None
    bad = [s for s in ("train", "test") if sums[s] != spec.release_sha256[s]]
    if bad:
        raise DatasetError(f"{what}: the {bad[0]} pixels (sha256 {sums[bad[0]][:16]}...) differ from the "
                           f"{spec.title} release's ({spec.release_sha256[bad[0]][:16]}...); load it as "
                           f"dataset=imagefolder, not as {spec.title}")
    return True


# --------------------------------------------------------------------------------------------
# CIFAR-100 (torchvision)
# --------------------------------------------------------------------------------------------
FETCH_COMMAND = "python -m greenlib.data download cifar100"


def _load_torchvision(name: str, spec: RealSpec, root: Path, download: bool) -> Dataset:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, spec.torchvision)
    title = spec.title
    splits, sums = {}, {}
    fetch = FETCH_COMMAND.replace("cifar100", name)
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=download)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted ..."
            raise DatasetError(
                f"{title} not found (or corrupt) in {root}: fetch it once with `{fetch}` "
                f"(needs internet) or load_dataset('{name}', download=True); torchvision said: {e}"
            ) from None
        except OSError as e:  # URLError, connection refused, disk full, ... during a download
            raise DatasetError(f"could not download {title} into {root}: {type(e).__name__}: {e}") from None
        sums["train" if train else "test"] = pixel_sha256(ds.data)  # NHWC, release order
        x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        splits[train] = (x, y)
    verified = _verify(f"{name} from torchvision's files in {root}", spec, sums)
    mean, std = _channel_stats(splits[True][0])
    provenance = {"source_sha256": None, "images": {"train": len(splits[True][1]), "test": len(splits[False][1])},
                  "pixel_sha256": sums, "order": {"train": "release order", "test": "release order"},
                  "release_verified": verified}
    return Dataset(
        name=name, train_x=splits[True][0], train_y=splits[True][1],
        test_x=splits[False][0], test_y=splits[False][1], num_classes=spec.num_classes,
        mean=mean, std=std, description=f"{title} (torchvision)", source="torchvision files",
        provenance=provenance,
    )


# --------------------------------------------------------------------------------------------
# The synthetic stand-in
# --------------------------------------------------------------------------------------------
# Every knob of the generator; changing any of them changes the data, so bump SYNTHETIC_VERSION.
# Amplitudes are in "signal units": the final image is 128 + 48 * signal, clipped to 0..255.
_SUPERCLASSES = 20  # 20 groups of 5 classes that share background, texture frequency and shape
_FINE_PER_SUPER = 5
_SIBLING_ORIENT_STEP = math.pi / 10  # texture orientation step between classes of one group (18 deg)
_SIBLING_COLOUR = 0.2  # std of a class's deviation from its group's colours
_BG_CLASS = 0.7  # weight of the group's low-frequency colour field
_CLUTTER = 0.9  # weight of a per-image random low-frequency colour field
_BLOB = 0.5  # weight of the class's blob colour
_GRATING = 1.3  # weight of the class's texture (oriented grating inside the blob)
_GRATING_AMP = (0.6, 1.2)  # per-image texture contrast, uniform
_NOISE = 0.5  # std of per-pixel uniform noise
_GAIN = 0.3  # per-image per-channel gain, uniform in 1 +- this
_OFFSET = 0.3  # per-image per-channel offset, normal std
_SHIFT_PX = 5.0  # blob centre, uniform in +- this many pixels
_RADIUS_PX = 9.0  # blob radius, times uniform(0.75, 1.25)
_ORIENT_JITTER = 0.20  # per-image texture orientation jitter, normal std in radians
_FREQ_JITTER = 0.10  # per-image texture frequency jitter, uniform +- this fraction
_CHUNK = 4096  # images per generation step (fixed: the random draws depend on it)
SYNTHETIC10_CLASSES = tuple(range(0, NUM_CLASSES, 10))  # synthetic10's classes: one per group, 10 groups
_SPLIT_TAGS = {100: (1, 2), 10: (3, 4)}  # random streams of (train, test): synthetic10 draws images of its own


def synthetic_cache_path(seed: int = 0, root: str | Path | None = None,
                         n_train: int = TRAIN_SIZE, n_test: int = TEST_SIZE, num_classes: int = NUM_CLASSES) -> Path:
    """Where the generated dataset for ``seed`` is cached (``root`` defaults to ``paths.cache_dir()``)."""
    root = Path(root) if root is not None else paths.cache_dir()
    sizes = "" if (n_train, n_test) == (TRAIN_SIZE, TEST_SIZE) else f"-{n_train}x{n_test}"
    return root / f"synthetic-cifar{num_classes}-v{SYNTHETIC_VERSION}-seed{seed}{sizes}.pt"


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} is not accepted; accepted: an int >= 0")
    return int(seed)


def _load_synthetic(seed: int, root: Path, n_train: int = TRAIN_SIZE, n_test: int = TEST_SIZE,
                    num_classes: int = NUM_CLASSES) -> Dataset:
    seed = _check_seed(seed)
    path = synthetic_cache_path(seed, root, n_train, n_test, num_classes)
    if path.exists():
        try:
            return _read_synthetic_cache(path, seed, n_train, n_test, num_classes)
        except Exception as e:  # any unreadable cache is re-creatable: say so, then regenerate
            reason = (str(e).splitlines() or [""])[0][:200]
            warnings.warn(f"synthetic cache {path} is unreadable ({type(e).__name__}: {reason}); regenerating",
                          RuntimeWarning, stacklevel=3)
    ds = make_synthetic(seed, n_train, n_test, num_classes=num_classes)
    buf = io.BytesIO()
    torch.save({"version": SYNTHETIC_VERSION, "seed": seed, "train_x": ds.train_x, "train_y": ds.train_y,
                "test_x": ds.test_x, "test_y": ds.test_y, "mean": list(ds.mean), "std": list(ds.std),
                "pixel_sha256": dict(ds.provenance["pixel_sha256"])}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return ds


def _read_synthetic_cache(path: Path, seed: int, n_train: int, n_test: int, num_classes: int = NUM_CLASSES) -> Dataset:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("version") != SYNTHETIC_VERSION or blob.get("seed") != seed:
        raise ValueError(f"holds version {blob.get('version')} seed {blob.get('seed')}, "
                         f"expected version {SYNTHETIC_VERSION} seed {seed}")
    shape = (3, IMAGE_PX, IMAGE_PX)
    if tuple(blob["train_x"].shape) != (n_train, *shape) or tuple(blob["test_x"].shape) != (n_test, *shape):
        raise ValueError(f"shapes {tuple(blob['train_x'].shape)} / {tuple(blob['test_x'].shape)} do not match")
    return _synthetic_dataset(seed, blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"],
                              tuple(blob["mean"]), tuple(blob["std"]), num_classes, blob.get("pixel_sha256"))


def _synthetic_dataset(seed, train_x, train_y, test_x, test_y, mean, std, num_classes: int = NUM_CLASSES,
                       sums: dict[str, str] | None = None) -> Dataset:
    name, title = ("synthetic", "CIFAR-100") if num_classes == NUM_CLASSES else ("synthetic10", "CIFAR-10")
    order = "generated: labels in blocks holding each class once"
    provenance = {"source_sha256": None, "images": {"train": len(train_y), "test": len(test_y)},
                  "pixel_sha256": sums or {"train": pixel_sha256(train_x.permute(0, 2, 3, 1).numpy()),
                                           "test": pixel_sha256(test_x.permute(0, 2, 3, 1).numpy())},
                  "order": {"train": order, "test": order}, "release_verified": None}
    ds = Dataset(name=name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                 num_classes=num_classes, mean=mean, std=std,
                 description=f"synthetic {title}-shaped stand-in (seed {seed}), NOT {title}",
                 source=f"generated (seed {seed}, version {SYNTHETIC_VERSION})", provenance=provenance)
    if int(train_y.min()) < 0 or int(train_y.max()) >= num_classes:
        raise ValueError("labels out of range")
    return ds


def make_synthetic(seed: int = 0, n_train: int = TRAIN_SIZE, n_test: int = TEST_SIZE,
                   num_classes: int = NUM_CLASSES) -> Dataset:
    """Generate the synthetic stand-in (not cached; :func:`load_dataset` caches it).

    100 classes in 20 groups of 5. An image is a group-specific low-frequency colour field plus
    per-image random colour clutter, with a soft blob at a random position and size carrying its
    group's colours (slightly shifted per class) and an oriented sinusoidal texture (frequency
    shared within the group, orientation 18 degrees apart between classes of a group, jittered
    per image, random phase); then per-image colour gain/offset, a random horizontal flip and
    strong per-pixel noise. About 1.5 s for the default sizes on 2 CPU cores. Labels come in blocks of
    100 holding each class once, so every prefix is balanced. Deterministic given ``seed``;
    the test set does not depend on ``n_train``. See docs/datasets.md.

    ``num_classes=10`` gives ``synthetic10``: the classes :data:`SYNTHETIC10_CLASSES` of the same
    class parameters (one from each of 10 groups), relabelled 0-9, with images drawn from random
    streams of their own (none is an image of ``synthetic``).
    """
    seed = _check_seed(seed)
    n_train = _check_size("n_train", n_train, 10 ** 7)
    n_test = _check_size("n_test", n_test, 10 ** 7)
    if num_classes not in _SPLIT_TAGS:
        raise ValueError(f"num_classes={num_classes!r} is not accepted; accepted: "
                         f"{', '.join(map(str, _SPLIT_TAGS))}")
    protos = _class_parameters(np.random.default_rng([seed, 0]))
    if num_classes != NUM_CLASSES:
        protos = {k: v[list(SYNTHETIC10_CLASSES)] for k, v in protos.items()}
    splits = []
    for tag, n in zip(_SPLIT_TAGS[num_classes], (n_train, n_test)):
        rng = np.random.default_rng([seed, tag])
        blocks = -(-n // num_classes)
        labels = np.concatenate([rng.permutation(num_classes) for _ in range(blocks)])[:n]
        splits.append((_render(protos, labels, rng), torch.from_numpy(labels.astype(np.int64))))
    (train_x, train_y), (test_x, test_y) = splits
    mean, std = _channel_stats(train_x)
    return _synthetic_dataset(seed, train_x, train_y, test_x, test_y, mean, std, num_classes)


def _class_parameters(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-class parameters, each an array with one row per class.

    Groups differ in everything (background, texture frequency, blob shape, colours); the five
    classes of a group share all that, up to small colour deviations, and differ mainly in the
    texture's orientation. Group orientations are centred in [0.70, 0.87] rad so that every
    class's orientations (and their mirror images, pi - theta) stay clear of other classes'.
    """
    group = np.arange(NUM_CLASSES) // _FINE_PER_SUPER
    sibling = np.arange(NUM_CLASSES) % _FINE_PER_SUPER
    g_colour = rng.standard_normal((_SUPERCLASSES, 3))[group] + _SIBLING_COLOUR * rng.standard_normal((NUM_CLASSES, 3))
    return {
        "background": rng.standard_normal((_SUPERCLASSES, 3, 4, 4))[group],  # 4x4 field, upsampled
        "orient": rng.uniform(0.70, 0.87, _SUPERCLASSES)[group] + (sibling - 2) * _SIBLING_ORIENT_STEP,
        "freq": rng.uniform(1 / 8, 1 / 3.5, _SUPERCLASSES)[group] * rng.uniform(0.95, 1.05, NUM_CLASSES),
        "aspect": rng.uniform(0.55, 1.0, _SUPERCLASSES)[group],
        "texture_colour": g_colour / np.linalg.norm(g_colour, axis=1, keepdims=True),
        "blob_colour": rng.standard_normal((_SUPERCLASSES, 3))[group]
        + _SIBLING_COLOUR * rng.standard_normal((NUM_CLASSES, 3)),
    }


def _upsample_matrix(lo: int, hi: int = IMAGE_PX) -> torch.Tensor:
    """(hi, lo) matrix M with M @ f @ M.T = bilinear upsampling (align_corners=False) of f."""
    src = ((np.arange(hi) + 0.5) * lo / hi - 0.5).clip(0, lo - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, lo - 1)
    w = (src - i0).astype(np.float32)
    m = np.zeros((hi, lo), np.float32)
    np.add.at(m, (np.arange(hi), i0), 1 - w)
    np.add.at(m, (np.arange(hi), i1), w)
    return torch.from_numpy(m)


def _render(p: dict[str, np.ndarray], labels: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Images for ``labels`` (uint8 NCHW), rendered _CHUNK at a time with vectorised ops."""
    out = torch.empty((len(labels), 3, IMAGE_PX, IMAGE_PX), dtype=torch.uint8)
    up = _upsample_matrix(4)
    coord = torch.arange(IMAGE_PX, dtype=torch.float32) - (IMAGE_PX - 1) / 2

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    for start in range(0, len(labels), _CHUNK):
        y = labels[start:start + _CHUNK]
        m = len(y)
        # A horizontal flip of the whole image, applied to its parameters: mirror the blob centre,
        # the texture orientation (theta -> pi - theta) and the low-frequency field.
        flip = rng.random(m) < 0.5
        cx = rng.uniform(-_SHIFT_PX, _SHIFT_PX, m)  # symmetric, so a flipped centre needs no change
        cy = rng.uniform(-_SHIFT_PX, _SHIFT_PX, m)
        radius = _RADIUS_PX * rng.uniform(0.75, 1.25, m)
        theta = p["orient"][y] + rng.normal(0, _ORIENT_JITTER, m)
        theta = np.where(flip, math.pi - theta, theta)
        freq = p["freq"][y] * rng.uniform(1 - _FREQ_JITTER, 1 + _FREQ_JITTER, m)
        phase = rng.uniform(0, 2 * math.pi, m)
        amp = rng.uniform(*_GRATING_AMP, m)
        gain = rng.uniform(1 - _GAIN, 1 + _GAIN, (m, 3))
        offset = rng.normal(0, _OFFSET, (m, 3))
        low = p["background"][y] * _BG_CLASS + rng.standard_normal((m, 3, 4, 4)) * _CLUTTER
        low = np.where(flip[:, None, None, None], low[..., ::-1], low)
        low = low * gain[:, :, None, None] + offset[:, :, None, None]  # rows of `up` sum to 1
        img = up @ t(low) @ up.T  # (m, 3, H, W): the background, colour jitter included

        X = coord.view(1, 1, -1) - t(cx).view(m, 1, 1)
        Y = coord.view(1, -1, 1) - t(cy).view(m, 1, 1)
        rx = t(radius).view(m, 1, 1)
        ry = t(radius * p["aspect"][y]).view(m, 1, 1)
        blob = torch.exp(-2 * ((X / rx) ** 2 + (Y / ry) ** 2))  # (m, H, W)
        u = X * t(np.cos(theta)).view(m, 1, 1) + Y * t(np.sin(theta)).view(m, 1, 1)
        texture = torch.sin(u.mul_(t(2 * math.pi * freq).view(m, 1, 1)).add_(t(phase).view(m, 1, 1))).mul_(blob)
        img.addcmul_(blob[:, None], t(p["blob_colour"][y] * gain * _BLOB).view(m, 3, 1, 1))
        img.addcmul_(texture[:, None], t(p["texture_colour"][y] * gain * (amp * _GRATING)[:, None]).view(m, 3, 1, 1))

        # Uniform noise from uint8 draws (cheaper than normal draws): u8 * k has std _NOISE.
        noise = torch.from_numpy(rng.integers(0, 256, (m, 3, IMAGE_PX, IMAGE_PX), dtype=np.uint8))
        k = _NOISE * math.sqrt(12) / 256
        img.mul_(48).add_(128 - 48 * 127.5 * k).add_(noise, alpha=48 * k)
        out[start:start + m] = img.clamp_(0, 255).round_()
    return out


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------
def _mix(*keys: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing), so (seed, epoch) pairs never collide."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


_ORDER, _AUGMENT = 0, 1  # stream tags for _mix


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order (CPU int64) of one training epoch; both loader kinds use it."""
    g = torch.Generator().manual_seed(_mix(seed, epoch, _ORDER))
    return torch.randperm(n, generator=g)


def _resolve_drop_last(n: int, batch_size: int, train: bool, drop_last: bool | None) -> bool:
    if drop_last is not None:
        return bool(drop_last)
    # Keep every sample, but BatchNorm cannot train on a final batch of one image.
    return bool(train and n > 1 and n % batch_size == 1)


def _check_batch_size(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is not accepted; accepted: an int >= 1")
    return int(value)


def _as_device(device: torch.device | str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _EpochLoader:
    """What both loader kinds share: argument checks, the epoch counter, samples per epoch.

    Subclasses call :meth:`_setup` first and define ``__len__``.
    """

    def _setup(self, x_uint8, y, batch_size, device, train, seed, drop_last, augment) -> None:
        _check_images(x_uint8, y, where=type(self).__name__)
        self.batch_size = _check_batch_size("batch_size", batch_size)
        self.device = _as_device(device)
        self.train = bool(train)
        self.augment = self.train if augment is None else bool(augment)
        self.seed = _check_seed(seed)
        self.n = len(y)
        self.drop_last = _resolve_drop_last(self.n, self.batch_size, self.train, drop_last)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Images yielded per epoch."""
        return len(self) * self.batch_size if self.drop_last else self.n

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration uses (shuffle and augmentation draws follow from it)."""
        if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch={epoch!r} is not accepted; accepted: an int >= 0")
        self.epoch = int(epoch)


class GPULoader(_EpochLoader):
    """Batches of a dataset that lives on ``device``, augmented there (cifar10-airbench style).

    ``x_uint8`` (N, 3, H, W) uint8 and ``y`` (N,) int64 are copied to ``device`` once. Each
    iteration yields ``(x, y)``: ``x`` float32 normalised with ``mean`` / ``std`` (per channel,
    [0, 1] units), ``y`` int64, both on ``device``.

    ``train=True`` shuffles with :func:`epoch_order` of ``(seed, epoch)``; ``augment`` (default:
    ``train``) applies, per image, a random crop of the image zero-padded by 4 px (offsets
    uniform in 0..8 per axis, the pad is 0 in uint8, before normalisation, like torchvision's
    ``RandomCrop(32, padding=4)``) and a horizontal flip with probability 1/2, as one batched
    gather: no per-image Python. The draws are deterministic in ``(seed, epoch)``.

    ``drop_last``: None keeps every sample, except that a training epoch drops a final batch of a
    single image (BatchNorm cannot train on it). Each ``iter()`` uses the current epoch and then
    advances it; :meth:`set_epoch` picks the epoch of the next iteration (to resume).
    """

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device | str,
                 train: bool, mean: Sequence[float], std: Sequence[float], seed: int = 0,
                 drop_last: bool | None = None, augment: bool | None = None):
        self._setup(x_uint8, y, batch_size, device, train, seed, drop_last, augment)
        self.image_px = tuple(x_uint8.shape[2:])
        x = x_uint8.to(self.device)
        # Pad once for the whole dataset; a crop is then a gather from the padded copy.
        self.x = F.pad(x, (PAD_PX,) * 4) if self.augment else x
        self.y = y.to(self.device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        n_used = self.num_samples
        order = epoch_order(self.n, self.seed, epoch) if self.train else torch.arange(self.n)
        order = order[:n_used].to(self.device)
        if self.augment:
            h, w = self.image_px
            g = torch.Generator().manual_seed(_mix(self.seed, epoch, _AUGMENT))
            oy = torch.randint(0, 2 * PAD_PX + 1, (n_used,), generator=g).to(self.device)
            ox = torch.randint(0, 2 * PAD_PX + 1, (n_used,), generator=g).to(self.device)
            flip = (torch.rand(n_used, generator=g) < 0.5).to(self.device)
            rows_base = torch.arange(h, device=self.device)
            cols_base = torch.arange(w, device=self.device)
            chan = torch.arange(self.x.shape[1], device=self.device).view(1, -1, 1, 1)
        for start in range(0, n_used, self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.augment:
                sl = slice(start, start + len(idx))
                rows = oy[sl, None] + rows_base  # (B, H)
                cols = ox[sl, None] + cols_base  # (B, W)
                cols = torch.where(flip[sl, None], cols.flip(1), cols)
                xb = self.x[idx.view(-1, 1, 1, 1), chan, rows[:, None, :, None], cols[:, None, None, :]]
            else:
                xb = self.x[idx]
            yield xb.float().div_(255).sub_(self.mean).div_(self.std), self.y[idx]


class _TensorImages(torch.utils.data.Dataset):
    """uint8 images through a torchvision transform; item keys are ``(index, rng_seed)``.

    The transform's random draws are seeded per item (in a forked CPU RNG, so the caller's global
    RNG is untouched): the augmentation is the same whatever the number of workers.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform, random: bool):
        self.x, self.y, self.transform, self.random = x, y, transform, random

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, rng_seed = key
        if not self.random:
            return self.transform(self.x[i]), self.y[i]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(rng_seed)
            return self.transform(self.x[i]), self.y[i]


class _EpochSampler(torch.utils.data.Sampler):
    """Yields ``(index, rng_seed)`` in :func:`epoch_order` (train) or sequential (test) order."""

    def __init__(self, n: int, seed: int, shuffle: bool):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(self.n, self.seed, self.epoch).tolist() if self.shuffle else range(self.n)
        base = _mix(self.seed, self.epoch, _AUGMENT)
        for i in order:
            yield i, (base + i * 0x9E3779B97F4A7C15) % (1 << 63)


class TorchvisionLoader(_EpochLoader):
    """The classic path: ``torch.utils.data.DataLoader`` with torchvision.transforms.v2 per image.

    Train: ``RandomCrop(32, padding=4)`` (zero fill), ``RandomHorizontalFlip()``,
    ``ToDtype(float32, scale=True)``, ``Normalize(mean, std)``; test: the last two. Batches are
    moved to ``device`` as they are yielded (from pinned memory when it is CUDA), so this yields
    what :class:`GPULoader` yields and a trainer treats both alike. Same order as GPULoader for a
    given ``(seed, epoch)``; the augmentation draws differ but have the same distribution.
    ``num_workers`` (None: ``min(8, usable CPUs)``) worker processes persist across epochs.
    ``drop_last``, ``set_epoch`` and epoch advance: as :class:`GPULoader`.
    """

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device | str,
                 train: bool, mean: Sequence[float], std: Sequence[float], seed: int = 0,
                 drop_last: bool | None = None, augment: bool | None = None, num_workers: int | None = None):
        from torchvision.transforms import v2

        self._setup(x_uint8, y, batch_size, device, train, seed, drop_last, augment)
        if num_workers is None:
            num_workers = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        if not isinstance(num_workers, (int, np.integer)) or isinstance(num_workers, bool) or num_workers < 0:
            raise ValueError(f"num_workers={num_workers!r} is not accepted; accepted: an int >= 0 or None")
        self.num_workers = int(num_workers)
        steps = [v2.RandomCrop(x_uint8.shape[-1], padding=PAD_PX), v2.RandomHorizontalFlip()] if self.augment else []
        transform = v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
        self.sampler = _EpochSampler(self.n, self.seed, shuffle=self.train)
        self.pin = self.device.type == "cuda"
        self.loader = torch.utils.data.DataLoader(
            _TensorImages(x_uint8, y, transform, random=self.augment), batch_size=self.batch_size,
            sampler=self.sampler, num_workers=self.num_workers, pin_memory=self.pin, drop_last=self.drop_last,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),  # leaves the global RNG alone
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # DataLoader reads the sampler lazily, at its first batch: hand it this epoch, then advance.
        self.sampler.epoch, self.epoch = self.epoch, self.epoch + 1
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=self.pin), y.to(self.device, non_blocking=self.pin)


def make_loaders(ds: Dataset, kind: str, batch_size: int, device: torch.device | str, seed: int = 0,
                 num_workers: int | None = None, test_batch_size: int | None = None):
    """``(train_loader, test_loader)`` of ``kind`` (one of :data:`LOADER_KINDS`) over ``ds``.

    The train loader shuffles and augments; the test loader does neither and keeps every image.
    ``test_batch_size`` defaults to ``batch_size``; ``num_workers`` applies to ``dataloader`` only.
    Raises ValueError for an unknown kind or a batch size that is not an int >= 1.
    """
    if kind not in LOADER_KINDS:
        raise ValueError(f"unknown loader kind {kind!r}; accepted: {', '.join(LOADER_KINDS)}")
    batch_size = _check_batch_size("batch_size", batch_size)
    test_batch_size = batch_size if test_batch_size is None else _check_batch_size("test_batch_size", test_batch_size)
    if kind == "gpu":
        make = GPULoader
        extra = {}
    else:
        make = TorchvisionLoader
        extra = {"num_workers": num_workers}
    train = make(ds.train_x, ds.train_y, batch_size, device, True, ds.mean, ds.std, seed=seed, **extra)
    test = make(ds.test_x, ds.test_y, test_batch_size, device, False, ds.mean, ds.std, seed=seed, **extra)
    return train, test


# --------------------------------------------------------------------------------------------
# Command line: python -m greenlib.data download cifar100
# --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m greenlib.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="fetch CIFAR-100 or CIFAR-10 (needs internet) or generate a synthetic set")
    dl.add_argument("dataset", choices=DATASETS)
    dl.add_argument("--root", default=None, help="folder (default: data/<dataset>/ or the cache folder)")
    dl.add_argument("--seed", type=int, default=0, help="synthetic only: generator seed")
    ck = sub.add_parser("check", help="load a dataset (decoding and caching an archive once) and print its record")
    ck.add_argument("dataset", choices=DATASETS)
    ck.add_argument("--data-root", default=None, help=f"dataset location (default: ${locate.ENV_VAR}, else "
                    "data/datasets/): a folder of archives or one archive")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            ds = load_dataset(args.dataset, seed=args.seed, download=True, root=args.root)
        else:
            ds = load_dataset(args.dataset, data_root=args.data_root)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{ds.description}: {len(ds.train_y):,} train / {len(ds.test_y):,} test images, "
          f"{ds.num_classes} classes, mean {ds.mean}, std {ds.std}")
    if args.command == "check":
        import json

        print(json.dumps(ds.record(), indent=1))
    return 0



"""greenlib.data: the synthetic stand-in, real data from ImageFolder archives (tiny ones made here, and the
shared CIFAR archives where ../shared/datasets exists), where datasets are found, both loader kinds."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import time
import warnings
import zipfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from greenlib import data, paths
from greenlib.data import folder, locate
from greenlib.data import DatasetError, GPULoader, TorchvisionLoader, load_dataset, make_loaders, make_synthetic

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def small():
    return make_synthetic(0, n_train=2000, n_test=500)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The default dataset, generated once into a temporary cache."""
    return load_dataset("synthetic", root=tmp_path_factory.mktemp("cache"))


# -- datasets ---------------------------------------------------------------------------------
def test_unknown_dataset_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"'imagenet'.*synthetic, cifar100"):
        load_dataset("imagenet")


def test_synthetic_default_shapes_dtypes_and_balance(full):
    assert full.name == "synthetic" and full.num_classes == 100
    assert full.train_x.shape == (50_000, 3, 32, 32) and full.test_x.shape == (10_000, 3, 32, 32)
    assert full.train_x.dtype == full.test_x.dtype == torch.uint8
    assert full.train_y.dtype == full.test_y.dtype == torch.int64
    assert torch.bincount(full.train_y, minlength=100).tolist() == [500] * 100
    assert torch.bincount(full.test_y, minlength=100).tolist() == [100] * 100
    assert "NOT CIFAR-100" in full.description and "seed 0" in full.description
    assert all(0.3 < m < 0.7 for m in full.mean) and all(0.1 < s < 0.35 for s in full.std)


def test_every_prefix_is_balanced_to_one_image(small):
    for n in (1, 99, 250, 1234):
        counts = torch.bincount(small.train_y[:n], minlength=100)
        assert int(counts.max() - counts.min()) <= 1


def test_synthetic_is_deterministic_in_the_seed():
    a, b = make_synthetic(3, 300, 200), make_synthetic(3, 300, 200)
    for f in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    c = make_synthetic(4, 300, 200)
    assert not torch.equal(a.train_x, c.train_x) and not torch.equal(a.test_x, c.test_x)
    # The test set does not depend on how many training images were asked for.
    assert torch.equal(make_synthetic(3, 500, 200).test_x, a.test_x)


def test_bad_seed_is_rejected():
    with pytest.raises(ValueError, match=r"seed=-1"):
        make_synthetic(-1, 10, 10)


def test_not_separable_by_mean_colour_or_nearest_class_mean(full):
    """Learnability needs a CNN (docs/datasets.md): pixel templates and mean colour do poorly."""
    xtr = full.train_x.float().flatten(1)
    means = torch.zeros(100, xtr.shape[1]).index_add_(0, full.train_y, xtr) / 500
    xte, yte = full.test_x[:2000].float().flatten(1), full.test_y[:2000]
    ncm = (torch.cdist(xte, means).argmin(1) == yte).float().mean().item()
    colour = means.view(100, 3, -1).mean(2)
    ncm_colour = (torch.cdist(xte.view(len(xte), 3, -1).mean(2), colour).argmin(1) == yte).float().mean().item()
    assert 0.02 < ncm < 0.5, ncm
    assert ncm_colour < 0.1, ncm_colour


def test_cache_is_hit_then_a_corrupt_cache_is_regenerated(tmp_path, monkeypatch):
    first = data._load_synthetic(1, tmp_path, n_train=200, n_test=100)
    path = data.synthetic_cache_path(1, tmp_path, 200, 100)
    assert path.exists() and list(tmp_path.glob(".*.tmp")) == []

    def fail(*a, **k):
        raise AssertionError("regenerated although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(data, "make_synthetic", fail)
        again = data._load_synthetic(1, tmp_path, n_train=200, n_test=100)
    assert torch.equal(again.train_x, first.train_x) and again.mean == first.mean

    path.write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="unreadable.*regenerating"):
        fixed = data._load_synthetic(1, tmp_path, n_train=200, n_test=100)
    assert torch.equal(fixed.train_x, first.train_x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache reads cleanly
        data._load_synthetic(1, tmp_path, n_train=200, n_test=100)


def test_subset_takes_prefixes_and_rejects_bad_sizes(small):
    sub = small.subset(100, 50)
    assert torch.equal(sub.train_x, small.train_x[:100]) and torch.equal(sub.test_y, small.test_y[:50])
    assert sub.mean == small.mean and sub.std == small.std and "first 100 train / 50 test" in sub.description
    assert small.subset(None, None) is small
    for bad in (0, -1, 2001, 1.5, True, "10"):
        with pytest.raises(ValueError, match=r"train_size=.*1\.\.2,000"):
            small.subset(bad, None)
    with pytest.raises(ValueError, match=r"test_size=501"):
        small.subset(None, 501)


def test_cifar100_missing_is_one_clear_line_naming_the_three_ways(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar100", root=tmp_path / "nowhere", data_root=tmp_path / "archives")
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in msg
    assert str(tmp_path / "nowhere") in msg and str(tmp_path / "archives") in msg
    for way in ("python -m greenlib.data download cifar100", "$GREENLIB_DATASETS or data_root", "cifar100-png.tar.xz",
                "dataset=synthetic"):
        assert way in msg
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_cli_reports_a_failed_download_in_one_line(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    def offline(*a, **k):
        raise URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    assert data.main(["download", "cifar100", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not download CIFAR-100" in err and "no route to host" in err


# -- ImageFolder archives (tiny ones, made here) ------------------------------------------------
def _write_folder(root: Path, classes=("cat", "dog", "emu"), n_train=4, n_test=2, names=None,
                  size=(32, 32), mode="RGB", ext=".png", seed=0) -> Path:
    """An ImageFolder tree under ``root``: train/<class>/<name><ext>, test/...; random pixels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for ci, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                name = names(split, ci, k, len(classes)) if names else f"img{k}"
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr, "RGB").convert(mode).save(root / split / c / f"{name}{ext}")
    return root


def _pack(tree: Path, out: Path) -> Path:
    """``tree``'s train/ and test/ as the archive ``out`` (.tar, .tar.xz or .zip, by its name)."""
    if out.name.endswith(".zip"):
        with zipfile.ZipFile(out, "w") as zf:
            for p in sorted(tree.rglob("*")):
                zf.write(p, p.relative_to(tree).as_posix())
    else:
        with tarfile.open(out, "w:xz" if out.name.endswith(".xz") else "w") as tf:
            for split in ("train", "test"):
                if (tree / split).exists():
                    tf.add(tree / split, arcname=split)
    return out


def _pixels(tree: Path, split: str, rel: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(tree / split / rel))


@pytest.fixture
def tree(tmp_path):
    return _write_folder(tmp_path / "tree")


@pytest.mark.parametrize("kind", [".tar", ".tar.xz", ".zip", "dir"])
def test_imagefolder_loads_every_kind_of_source_with_the_same_pixels_and_labels(tree, tmp_path, kind):
    src = tree if kind == "dir" else _pack(tree, tmp_path / f"mine{kind}")
    ds = load_dataset("imagefolder", data_root=src)
    assert ds.name == "imagefolder" and ds.num_classes == 3 and len(ds.train_y) == 12 and len(ds.test_y) == 6
    assert ds.description == f"ImageFolder {src.name} (3 classes)" and ds.source == src.name
    # round-robin over classes (names are not 0..N-1): cat/img0, dog/img0, emu/img0, cat/img1, ...
    assert ds.train_y.tolist() == [0, 1, 2] * 4 and ds.test_y.tolist() == [0, 1, 2] * 2
    assert np.array_equal(ds.train_x[4].permute(1, 2, 0).numpy(), _pixels(tree, "train", "dog/img1.png"))
    rec = ds.record()
    assert rec["images"] == {"train": 12, "test": 6} and rec["used"] == {"train": 12, "test": 6}
    assert rec["order"]["train"] == folder.ORDER_ROUND_ROBIN and rec["release_verified"] is None
    hwc = ds.train_x.permute(0, 2, 3, 1).contiguous().numpy()
    assert rec["pixel_sha256"]["train"] == hashlib.sha256(hwc.tobytes()).hexdigest()
    assert ds.subset(5, 2).record()["used"] == {"train": 5, "test": 2}
    assert ds.subset(5, 2).record()["pixel_sha256"] == rec["pixel_sha256"]  # of the full set


def test_file_names_that_number_a_split_give_the_release_order(tmp_path):
    # image k of the split is named k; classes interleave as in a release
    tree = _write_folder(tmp_path / "t", names=lambda split, ci, k, nc: f"{k * nc + (nc - 1 - ci):05d}")
    ds = load_dataset("imagefolder", data_root=tree)
    assert ds.provenance["order"] == {"train": folder.ORDER_RELEASE, "test": folder.ORDER_RELEASE}
    assert ds.train_y.tolist() == [2, 1, 0] * 4  # file 00000 is emu's (class 2), 00001 dog's, ...
    assert np.array_equal(ds.train_x[1].permute(1, 2, 0).numpy(), _pixels(tree, "train", "dog/00001.png"))


def test_round_robin_order_compares_numbers_as_numbers(tmp_path):
    tree = _write_folder(tmp_path / "t", classes=("a",), n_train=11, n_test=1, names=lambda s, ci, k, nc: f"x{k}")
    ds = load_dataset("imagefolder", data_root=tree)
    assert np.array_equal(ds.train_x[10].permute(1, 2, 0).numpy(), _pixels(tree, "train", "a/x10.png"))


def test_a_location_folder_finds_archives_by_their_known_names(tree, tmp_path, monkeypatch):
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    _pack(tree, shelf / "imagefolder.zip")
    assert locate.find("imagefolder", shelf) == shelf / "imagefolder.zip"
    monkeypatch.setenv(locate.ENV_VAR, str(shelf))
    assert load_dataset("imagefolder").source == "imagefolder.zip"  # the variable, when no data_root is given
    assert locate.find("cifar100", shelf) is None
    (shelf / "cifar100-png.tar.xz").write_bytes(b"")
    assert locate.find("cifar100") == shelf / "cifar100-png.tar.xz"
    monkeypatch.delenv(locate.ENV_VAR)
    assert locate.data_root() == paths.data_dir() / "datasets" and locate.find("cifar100") is None


@pytest.mark.parametrize("case, words", [
    ("no_test", ["mine.tar", "split test/ is missing", "train/<class>/<image>"]),
    ("big", ["mine.tar:train/dog/img1.png", "a 33x32 RGB image", "must be 32x32 RGB"]),
    ("grey", ["mine.tar:train/cat/img0.png", "32x32 L image", "must be 32x32 RGB"]),
    ("empty_class", ["mine.tar", "class 'fox' of test/ holds no image"]),
    ("classes_differ", ["mine.tar", "different classes", "only in train/: ['emu']", "only in test/: ['fox']"]),
    ("truncated", ["mine.tar", "corrupt or unreadable archive"]),
    ("garbage", ["mine.tar", "corrupt or unreadable archive"]),
    ("bad_image", ["mine.tar:test/cat/img0.png", "not a readable image"]),
])
def test_imagefolder_errors_are_one_line_naming_the_problem(tmp_path, case, words):
    from PIL import Image

    t = _write_folder(tmp_path / "t")
    if case == "no_test":
        shutil.rmtree(t / "test")
    elif case == "big":
        Image.new("RGB", (33, 32)).save(t / "train" / "dog" / "img1.png")
    elif case == "grey":
        Image.new("L", (32, 32)).save(t / "train" / "cat" / "img0.png")
    elif case == "empty_class":
        (t / "train" / "fox").mkdir()
        (t / "test" / "fox").mkdir()
        Image.new("RGB", (32, 32)).save(t / "train" / "fox" / "a.png")
    elif case == "classes_differ":
        (t / "test" / "emu").rename(t / "test" / "fox")
    elif case == "bad_image":
        (t / "test" / "cat" / "img0.png").write_bytes(b"not a png at all")
    out = tmp_path / "mine.tar"
    if case == "garbage":
        out.write_bytes(b"\x00garbage" * 1000)
    else:
        _pack(t, out)
    if case == "truncated":
        out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(DatasetError) as info:
        load_dataset("imagefolder", data_root=out)
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_a_truncated_xz_archive_and_a_bad_zip_are_corrupt(tree, tmp_path):
    for name in ("mine.tar.xz", "mine.zip"):
        out = _pack(tree, tmp_path / name)
        out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
        with pytest.raises(DatasetError, match=rf"^{re.escape(name)}: corrupt or unreadable archive \("):
            load_dataset("imagefolder", data_root=out)


def test_no_imagefolder_at_the_location_is_one_line(tmp_path):
    with pytest.raises(DatasetError, match=r"^ImageFolder \(imagefolder\) not found: no imagefolder.tar / "
                       r".* \(data_root\); point \$GREENLIB_DATASETS or data_root at the archive itself \(.tar, "):
        load_dataset("imagefolder", data_root=tmp_path)


def test_decoded_archive_is_cached_by_checksum_and_rebuilt_when_it_changes(tree, tmp_path, monkeypatch):
    from PIL import Image

    src = _pack(tree, tmp_path / "mine.tar")
    first = load_dataset("imagefolder", data_root=src)
    cache = folder.cache_path(paths.cache_dir(), folder.source_checksum(src))
    assert cache.exists() and first.provenance["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    with monkeypatch.context() as m:
        m.setattr(folder, "build", lambda *a, **k: pytest.fail("decoded again although the archive is unchanged"))
        again = load_dataset("imagefolder", data_root=src)
    assert torch.equal(again.train_x, first.train_x) and again.record() == first.record()

    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(tree / "train" / "cat" / "img0.png")
    _pack(tree, src)  # the same file name, other contents
    built = []
    real_build = folder.build
    monkeypatch.setattr(folder, "build", lambda *a, **k: built.append(1) or real_build(*a, **k))
    changed = load_dataset("imagefolder", data_root=src)
    assert built == [1] and changed.provenance["source_sha256"] != first.provenance["source_sha256"]
    assert (changed.train_x[0] == 7).all() and not torch.equal(changed.train_x, first.train_x)

    cache = folder.cache_path(paths.cache_dir(), changed.provenance["source_sha256"])
    cache.write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="unreadable.*decoding again"):
        fixed = load_dataset("imagefolder", data_root=src)
    assert torch.equal(fixed.train_x, changed.train_x)


def test_parallel_decode_equals_the_serial_one(tmp_path, monkeypatch):
    tree = _write_folder(tmp_path / "t", n_train=10, n_test=4)
    items = [(str(p), p.read_bytes()) for p in sorted((tree / "train").rglob("*.png"))]
    serial = folder.decode(items, workers=1)
    monkeypatch.setattr(folder, "PARALLEL_MIN_IMAGES", 4)
    assert np.array_equal(folder.decode(items, workers=2), serial)
    items[7] = (items[7][0], b"broken")
    with pytest.raises(DatasetError, match=re.escape(items[7][0]) + ": not a readable image"):
        folder.decode(items, workers=2)


def test_cifar_names_check_what_they_promise(tmp_path, monkeypatch):
    jpeg = _write_folder(tmp_path / "j", classes=tuple("abcdefghij"), n_train=2, n_test=1, ext=".jpg")
    with pytest.raises(DatasetError, match=r"^cifar10 from cifar10.tar: holds lossy .* dataset=cifar10-jpeg\)$"):
        load_dataset("cifar10", data_root=_pack(jpeg, tmp_path / "cifar10.tar"))
    with pytest.raises(DatasetError, match=r"^cifar10-jpeg from j.tar: 20 train / 10 test images, expected 50,000"):
        load_dataset("cifar10-jpeg", data_root=_pack(jpeg, tmp_path / "j.tar"))
    with pytest.raises(DatasetError, match=r"^cifar100 from j.tar: 10 classes, expected 100$"):
        load_dataset("cifar100", data_root=tmp_path / "j.tar")
    # pixels that are not the release's are not CIFAR-100, whatever the archive is called
    monkeypatch.setitem(data.REAL, "cifar100", replace(data.REAL["cifar100"], num_classes=None, counts=None))
    png = _pack(_write_folder(tmp_path / "p"), tmp_path / "cifar100-png.tar.xz")
    with pytest.raises(DatasetError, match=r"train pixels .* differ from the CIFAR-100 release's .* "
                                           r"dataset=imagefolder, not as CIFAR-100$"):
        load_dataset("cifar100", data_root=png)
    assert load_dataset("imagefolder", data_root=png).description == "ImageFolder cifar100-png.tar.xz (3 classes)"


def test_variant_picks_the_jpeg_copy_only_where_it_is_all_there_is(tmp_path):
    assert data.variant("cifar100", 10, tmp_path) == "cifar10"  # nothing there: loading it says how to get it
    (tmp_path / "cifar10-jpeg.tar.xz").write_bytes(b"")
    assert data.variant("cifar100", 10, tmp_path) == "cifar10-jpeg"
    (tmp_path / "cifar10.zip").write_bytes(b"")
    assert data.variant("cifar100", 10, tmp_path) == "cifar10"
    assert data.variant("cifar10-jpeg", 100, tmp_path) == "cifar100" and data.variant("synthetic", 10) == "synthetic10"
    assert data.variant("cifar100", 10, tmp_path / "cifar10.zip") == "cifar10"  # one archive is not a shelf
    assert data.variant("imagefolder", 100) == "imagefolder"
    with pytest.raises(ValueError, match=r"num_classes=10 has no imagefolder variant; accepted: 100"):
        data.variant("imagefolder", 10)


def test_auto_picks_cifar100_where_found_and_says_which(tmp_path):
    name, line = data.auto_dataset(tmp_path)
    assert name == "synthetic" and line.startswith("dataset: synthetic stand-in (CIFAR-100 archive not found: ")
    assert str(tmp_path) in line and "\n" not in line
    (tmp_path / "cifar100-png.tar.xz").write_bytes(b"")
    assert data.auto_dataset(tmp_path) == ("cifar100", "dataset: cifar100 (real, subsets; from cifar100-png.tar.xz)")


def test_profiles_default_to_cifar100_and_smoke_to_what_is_found(tmp_path):
    from greenlib import config

    assert config.DATASETS == (*data.DATASETS, "auto")
    for profile in ("quick", "paper"):
        assert config.resolve("baselines", profile=profile).dataset == "cifar100"
    assert config.resolve("baselines", profile="smoke", data_root=str(tmp_path)).dataset == "synthetic"
    (tmp_path / "cifar100-png.tar.xz").write_bytes(b"")
    assert config.resolve("baselines", profile="smoke", data_root=str(tmp_path)).dataset == "cifar100"
    assert config.resolve("nas", profile="smoke", data_root=str(tmp_path), dataset="synthetic").dataset == "synthetic"


def test_quick_without_cifar100_stops_before_anything_trains(tmp_path, monkeypatch):
    from greenlib import config, experiments

    cfg = config.resolve("baselines", profile="quick", device="cpu", data_root=str(tmp_path))
    monkeypatch.setattr(experiments, "train_and_measure", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(DatasetError) as info:
        experiments.prepare(cfg)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("CIFAR-100 not found: ") and "one of three ways" in msg


def test_dataset_record_is_in_the_run_environment(tree, tmp_path, capsys):
    from greenlib import config, experiments

    src = _pack(tree, tmp_path / "mine.zip")
    cfg = config.resolve("baselines", profile="smoke", dataset="imagefolder", data_root=str(src), train_size=6,
                         test_size=3)
    ctx = experiments.prepare(cfg)
    rec = ctx.environment["dataset_record"]
    assert rec["name"] == "imagefolder" and rec["source"] == "mine.zip" and rec["used"] == {"train": 6, "test": 3}
    assert rec["images"] == {"train": 12, "test": 6} and len(rec["pixel_sha256"]["train"]) == 64
    assert ctx.environment["dataset_description"].startswith("ImageFolder mine.zip (3 classes); first 6 train")
    assert capsys.readouterr().out == ""  # only an auto choice is announced
    smoke = experiments.prepare(config.resolve("baselines", profile="smoke", data_root=str(tmp_path), train_size=8,
                                               test_size=8))
    assert capsys.readouterr().out.startswith("dataset: synthetic stand-in (CIFAR-100 archive not found")
    assert smoke.environment["dataset_record"]["source"].startswith("generated (seed 0")


# -- the shared CIFAR archives (../shared/datasets), decoded once per session -----------------------
# <repo>/../shared/datasets, or the caller's GREENLIB_DATASETS (read at collection, before conftest hides it
# from every other test) where that holds the archives, e.g. in a worktree that has no ../shared beside it
SHARED_CANDIDATES = [p for p in (os.environ.get("GREENLIB_DATASETS"), paths.REPO_ROOT.parent / "shared" / "datasets")
                     if p]


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    for p in map(Path, SHARED_CANDIDATES):
        if (p / "cifar100-png.tar.xz").exists() and (p / "cifar100-png.json").exists():
            return p
    pytest.skip(f"the shared CIFAR archives are not here (no cifar100-png.tar.xz in "
                f"{' or '.join(map(str, SHARED_CANDIDATES))}): a clone beside ../shared runs these")


@pytest.fixture(scope="session")
def cifar100(shared_datasets):
    """CIFAR-100 from the archive, decoded once per session into the session's cache (paths.cache_dir())."""
    return load_dataset("cifar100", data_root=shared_datasets)


def test_cifar100_archive_reproduces_the_published_pixels_counts_and_statistics(cifar100, shared_datasets):
    meta = json.loads((shared_datasets / "cifar100-png.json").read_text())
    rec = cifar100.record()
    for split in ("train", "test"):
        assert rec["pixel_sha256"][split] == meta["splits"][split]["sha256_pixels_original_order_hwc"]
        assert rec["images"][split] == meta["splits"][split]["images"]
        y = getattr(cifar100, f"{split}_y")
        assert torch.bincount(y, minlength=100).tolist() == [meta["splits"][split]["per_class"]] * 100
        mean, std = data._channel_stats(getattr(cifar100, f"{split}_x"))
        assert list(mean) == meta["splits"][split]["mean"] and list(std) == meta["splits"][split]["std"]
    assert list(cifar100.mean) == meta["splits"]["train"]["mean"] and cifar100.num_classes == 100
    assert cifar100.provenance["class_names"] == meta["fine_label_names"]
    assert rec["source"] == "cifar100-png.tar.xz" and rec["release_verified"] is True
    assert rec["order"]["train"] == folder.ORDER_RELEASE and cifar100.description.startswith("CIFAR-100 (from")
    assert rec["source_sha256"] == (shared_datasets / "SHA256SUMS").read_text().split("cifar100-png")[0].split()[-1]


def test_a_cached_cifar100_load_takes_under_two_seconds(cifar100, shared_datasets, monkeypatch):
    monkeypatch.setattr(folder, "build", lambda *a, **k: pytest.fail("decoded again"))
    t0 = time.perf_counter()
    again = load_dataset("cifar100", data_root=shared_datasets)
    assert time.perf_counter() - t0 < 2.0
    assert again.record() == cifar100.record()


def test_cifar10_jpeg_copy_is_its_own_labelled_dataset(shared_datasets):
    ds = load_dataset("cifar10-jpeg", data_root=shared_datasets)
    assert ds.description == "CIFAR-10 (JPEG copy, lossy), from cifar10-jpeg.tar.xz"
    assert ds.num_classes == 10 and torch.bincount(ds.train_y).tolist() == [5000] * 10
    assert ds.train_y[:20].tolist() == list(range(10)) * 2  # round-robin: every prefix balanced
    assert ds.provenance["order"]["train"] == folder.ORDER_ROUND_ROBIN
    assert data.variant("cifar100", 10, shared_datasets) == "cifar10-jpeg"
    with pytest.raises(DatasetError, match="cifar10-jpeg"):  # the JPEG copy is never plain cifar10
        load_dataset("cifar10", data_root=shared_datasets / "cifar10-jpeg.tar.xz")


@pytest.mark.notebook
def test_smoke_notebook_runs_on_real_cifar100_subsets(cifar100, shared_datasets, tmp_path):
    from greenlib import pipeline
    from greenlib.results import ResultsStore

    nb = pipeline.notebooks(["01_baselines"])[0]
    (_, params), = pipeline.plan([nb], "smoke", {"data_root": str(shared_datasets), "models": ["resnet8"]},
                                 redraw=False)
    pipeline.execute(nb, tmp_path / nb.name, params, progress=False)
    out = json.loads((tmp_path / nb.name).read_text())
    text = "".join("".join(o.get("text", "")) for c in out["cells"] for o in c.get("outputs", []))
    assert "dataset: cifar100 (real, subsets; from cifar100-png.tar.xz)" in text
    runs = [r for r in ResultsStore(paths.results_dir("smoke")).runs()
            if r.config.get("model") == "resnet8" and r.config.get("dataset") == "cifar100"]
    env = json.loads((runs[0].folder / "environment.json").read_text())
    rec = env["dataset_record"]
    assert rec["name"] == "cifar100" and rec["used"] == {"train": 128, "test": 128}
    assert rec["pixel_sha256"] == cifar100.record()["pixel_sha256"]


# -- loaders ----------------------------------------------------------------------------------
def _ids(n: int, h: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose pixels spell their index; labels are the index."""
    x = (torch.arange(n, dtype=torch.int64) % 251).view(n, 1, 1, 1).expand(n, 3, h, h).to(torch.uint8).clone()
    return x, torch.arange(n)


def _loader(kind: str, x, y, batch_size, train, **kw):
    if kind == "gpu":
        return GPULoader(x, y, batch_size, "cpu", train, MEAN, STD, **kw)
    return TorchvisionLoader(x, y, batch_size, "cpu", train, MEAN, STD, num_workers=0, **kw)


def _epoch(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("kind", ["gpu", "dataloader"])
@pytest.mark.parametrize("train", [True, False])
def test_every_sample_exactly_once_per_epoch(kind, train):
    x, y = _ids(103)
    loader = _loader(kind, x, y, 10, train)
    assert len(loader) == 11 and loader.num_samples == 103
    for _ in range(2):
        xb, yb = _epoch(loader)
        assert xb.shape == (103, 3, 8, 8) and xb.dtype == torch.float32 and yb.dtype == torch.int64
        assert sorted(yb.tolist()) == list(range(103))
    if not train:  # in order, no augmentation, just normalised
        assert torch.equal(yb, y)
        expected = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        torch.testing.assert_close(xb, expected)


@pytest.mark.parametrize("kind", ["gpu", "dataloader"])
def test_drop_last(kind):
    x, y = _ids(21)
    assert len(_loader(kind, x, y, 10, True)) == 2  # a last batch of one cannot train BatchNorm
    assert len(_loader(kind, x, y, 10, False)) == 3  # evaluation keeps it
    x, y = _ids(25)
    loader = _loader(kind, x, y, 10, True, drop_last=True)
    assert len(loader) == 2 and loader.num_samples == 20 and len(_epoch(loader)[1]) == 20


@pytest.mark.parametrize("kind", ["gpu", "dataloader"])
def test_shuffle_is_deterministic_in_seed_and_epoch(kind):
    x, y = _ids(200)
    a, b = _loader(kind, x, y, 32, True, seed=5), _loader(kind, x, y, 32, True, seed=5)
    ea0, ea1 = _epoch(a), _epoch(a)  # iterating advances the epoch
    eb0 = _epoch(b)
    assert torch.equal(ea0[0], eb0[0]) and torch.equal(ea0[1], eb0[1])
    assert not torch.equal(ea0[1], ea1[1])
    b.set_epoch(1)
    assert torch.equal(_epoch(b)[0], ea1[0])
    assert not torch.equal(_epoch(_loader(kind, x, y, 32, True, seed=6))[1], ea0[1])
    with pytest.raises(ValueError, match="epoch=-1"):
        a.set_epoch(-1)


def test_both_kinds_visit_samples_in_the_same_order():
    x, y = _ids(150)
    for epoch in (0, 3):
        g, d = _loader("gpu", x, y, 16, True, seed=2), _loader("dataloader", x, y, 16, True, seed=2)
        g.set_epoch(epoch)
        d.set_epoch(epoch)
        assert torch.equal(_epoch(g)[1], _epoch(d)[1])


def _coordinate_image() -> torch.Tensor:
    """A 3x32x32 image whose pixels spell their own row and column, none of them 0."""
    ar = torch.arange(32)
    img = torch.stack([(10 + 7 * ar).view(32, 1).expand(32, 32), (10 + 7 * ar).view(1, 32).expand(32, 32),
                       torch.full((32, 32), 200)])
    return img.to(torch.uint8)


def _variants(img: torch.Tensor) -> dict[bytes, tuple[int, int, bool]]:
    """Every crop of the 4-px zero-padded image, flipped or not, keyed by its bytes."""
    padded = torch.zeros(3, 40, 40, dtype=torch.uint8)
    padded[:, 4:36, 4:36] = img
    out = {}
    for oy in range(9):
        for ox in range(9):
            crop = padded[:, oy:oy + 32, ox:ox + 32]
            out[crop.numpy().tobytes()] = (oy, ox, False)
            out[crop.flip(-1).contiguous().numpy().tobytes()] = (oy, ox, True)
    assert len(out) == 162
    return out


@pytest.mark.parametrize("kind", ["gpu", "dataloader"])
def test_augmentation_is_a_zero_padded_random_crop_and_a_flip(kind):
    """Each output is exactly one of the 162 pad-4 crops (flipped or not), normalised after
    padding with 0; offsets are uniform in 0..8 and half the images are flipped, in both kinds."""
    n = 1800
    img = _coordinate_image()
    x, y = img.expand(n, 3, 32, 32).clone(), torch.zeros(n, dtype=torch.int64)
    xb, _ = _epoch(_loader(kind, x, y, 300, True, seed=1))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    raw = ((xb * std + mean) * 255).round()
    assert (raw - (xb * std + mean) * 255).abs().max() < 1e-3  # normalised uint8 values, nothing else
    variants = _variants(img)
    seen = [variants[r.to(torch.uint8).numpy().tobytes()] for r in raw]  # KeyError: not a pad-crop-flip
    # A padded pixel is 0 before normalisation, i.e. -mean/std after it.
    top_pad = [i for i, (oy, _, _) in enumerate(seen) if oy == 0][0]
    torch.testing.assert_close(xb[top_pad, :, 0, :], (-mean / std).view(3, 1).expand(3, 32))
    for axis in (0, 1):
        counts = Counter(s[axis] for s in seen)
        assert sorted(counts) == list(range(9)) and all(abs(c - n / 9) < 70 for c in counts.values()), counts
    assert abs(sum(s[2] for s in seen) - n / 2) < 100
    assert len(set(seen)) == 162


def test_dataloader_augmentation_ignores_workers_and_leaves_the_global_rng_alone():
    x, y = _ids(64, h=32)
    state = torch.get_rng_state()
    one = _epoch(TorchvisionLoader(x, y, 16, "cpu", True, MEAN, STD, seed=3, num_workers=0))
    assert torch.equal(torch.get_rng_state(), state)
    two = _epoch(TorchvisionLoader(x, y, 16, "cpu", True, MEAN, STD, seed=3, num_workers=2))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_gpu_loader_is_deterministic_in_its_augmentation():
    img = _coordinate_image()
    x, y = img.expand(64, 3, 32, 32).clone(), torch.arange(64)
    a = _epoch(_loader("gpu", x, y, 16, True, seed=9))
    b = _epoch(_loader("gpu", x, y, 16, True, seed=9))
    c = _epoch(_loader("gpu", x, y, 16, True, seed=10))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


@pytest.mark.parametrize("kind", ["gpu", "dataloader"])
def test_make_loaders(small, kind):
    ds = small.subset(130, 70)
    train, test = make_loaders(ds, kind, 32, "cpu", seed=0, num_workers=0, test_batch_size=50)
    assert (len(train), len(test)) == (5, 2) and train.augment and not test.augment
    xb, yb = next(iter(train))
    assert xb.shape == (32, 3, 32, 32) and xb.dtype == torch.float32 and xb.device.type == "cpu"
    xt, yt = _epoch(test)
    assert torch.equal(yt, ds.test_y)
    mean, std = torch.tensor(ds.mean).view(1, 3, 1, 1), torch.tensor(ds.std).view(1, 3, 1, 1)
    torch.testing.assert_close(xt, (ds.test_x.float() / 255 - mean) / std)


def test_make_loaders_rejects_bad_kind_and_sizes(small):
    with pytest.raises(ValueError, match=r"'numpy'.*gpu, dataloader"):
        make_loaders(small, "numpy", 32, "cpu")
    with pytest.raises(ValueError, match=r"batch_size=0"):
        make_loaders(small, "gpu", 0, "cpu")
    with pytest.raises(ValueError, match=r"test_batch_size=-2"):
        make_loaders(small, "gpu", 8, "cpu", test_batch_size=-2)
    with pytest.raises(ValueError, match=r"num_workers=-1"):
        make_loaders(small, "dataloader", 8, "cpu", num_workers=-1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["gpu", "dataloader"])
def test_loaders_yield_cuda_tensors(small, kind):
    train, test = make_loaders(small, kind, 64, "cuda", num_workers=2)
    for loader in (train, test):
        xb, yb = next(iter(loader))
        assert xb.is_cuda and yb.is_cuda and xb.dtype == torch.float32 and yb.dtype == torch.int64

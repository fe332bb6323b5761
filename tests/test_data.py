"""greenlib.data: the synthetic stand-in, CIFAR-100's missing-data error, both loader kinds."""
from __future__ import annotations

import warnings
from collections import Counter
from urllib.error import URLError

import pytest
import torch

from greenlib import data
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


def test_cifar100_missing_is_one_clear_line(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar100", root=tmp_path / "nowhere")
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in msg
    assert str(tmp_path / "nowhere") in msg and "python -m greenlib.data download cifar100" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_cli_reports_a_failed_download_in_one_line(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    def offline(*a, **k):
        raise URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    assert data.main(["download", "cifar100", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not download CIFAR-100" in err and "no route to host" in err


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

"""Tests for dire.data: every loader against tiny fixture folders in the real on-disk layout."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dire.data import datasets as D

JPEG_TOL = 4 / 255  # solid-colour JPEGs at quality 95 decode within a couple of levels


# --------------------------------------------------------------------------- fixture writers


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    """Write ``array`` as an idx file: 00 00 <type> <ndim>, big-endian dims, big-endian data."""
    codes = {np.dtype(np.uint8): (0x08, ">u1"), np.dtype(np.int32): (0x0C, ">i4")}
    code, be = codes[array.dtype]
    payload = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(be).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_fashion(folder: Path, *, gz: bool, seed: int = 0, n_train: int = 12, n_test: int = 5):
    """Four idx files in ``folder``; returns {split: (images uint8 [N,28,28], labels)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) * 7 + seed) % 10
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), gz=gz)
        out[split] = (images, labels)
    return out


def pickle_to(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def make_cifar10(root: Path, seed: int = 0):
    """cifar-10-batches-py with 5 train batches of 2 images, a test batch of 3, meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    train_x, train_y = [], []
    labels = [3, 1, 3, 5, 7, 3, 1, 9, 2, 5]  # class 3 three times; 0, 4, 6, 8 absent
    for b in range(1, 6):
        x = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        y = labels[2 * b - 2 : 2 * b]
        pickle_to(folder / f"data_batch_{b}", {b"data": x, b"labels": y, b"batch_label": b"x"})
        train_x.append(x)
        train_y += y
    test_x = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    test_y = [4, 4, 9]
    pickle_to(folder / "test_batch", {b"data": test_x, b"labels": test_y})
    names = [f"name{i}".encode() for i in range(10)]
    pickle_to(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return {"train": (np.concatenate(train_x), np.array(train_y)), "test": (test_x, np.array(test_y))}


def make_cifar100(root: Path, seed: int = 1):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    out = {}
    for split, n in (("train", 6), ("test", 4)):
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.choice(100, size=n, replace=False)]
        coarse = [int(v) % 20 + 1 for v in fine[::-1]]  # deliberately different from fine
        pickle_to(folder / split, {b"data": x, b"fine_labels": fine, b"coarse_labels": coarse})
        out[split] = (x, np.array(fine))
    return out


def solid_jpeg(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG", quality=95)


COLORS = [(220, 40, 40), (40, 200, 60), (30, 60, 210), (230, 220, 50), (120, 120, 120), (250, 250, 250)]


def make_tiny(root: Path):
    """3-class tiny-imagenet-200; returns (wnids, train [(color, label)], val [(color, label)])."""
    base = root / "tiny-imagenet-200"
    wnids = ["n0300", "n0100", "n0200"]  # class index = line order, not sorted order
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    train = []
    for label, w in enumerate(wnids):
        for k in range(2):
            color = COLORS[(2 * label + k) % len(COLORS)]
            solid_jpeg(base / "train" / w / "images" / f"{w}_{k}.JPEG", color)
            train.append((color, label))
        (base / "train" / w / f"{w}_boxes.txt").write_text("")  # real archive has these
    # val: annotation order is not class order; one image is not 64x64 (80x64)
    val_rows = [
        ("val_0.JPEG", "n0200", COLORS[4]),
        ("val_1.JPEG", "n0300", COLORS[0]),
        ("val_2.JPEG", "n0100", COLORS[3]),
        ("val_3.JPEG", "n0300", COLORS[5]),
    ]
    lines = []
    for i, (fname, w, color) in enumerate(val_rows):
        solid_jpeg(base / "val" / "images" / fname, color, size=(80, 64) if i == 2 else (64, 64))
        lines.append(f"{fname}\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    val = [(color, wnids.index(w)) for _, w, color in val_rows]
    return wnids, train, val


def make_imagenet(root: Path):
    """3-class ImageFolder imagenet; val lacks one class. Returns color per (split, wnid)."""
    base = root / "imagenet"
    layout = {
        "train": {"n0900": [COLORS[0], COLORS[1]], "n0100": [COLORS[2]], "n0500": [COLORS[3], COLORS[4]]},
        "val": {"n0900": [COLORS[5]], "n0500": [COLORS[1]]},
    }
    for split, classes in layout.items():
        for w, colors in classes.items():
            for k, color in enumerate(colors):
                solid_jpeg(base / split / w / f"{w}_{k}.JPEG", color, size=(40, 30))
    return layout


def denorm(ds: D.ImageDataset, x: torch.Tensor) -> torch.Tensor:
    return ds.info.denormalize(x)


# --------------------------------------------------------------------------- registry and info


def test_registry_names_and_shapes():
    expected = {
        "digits": (10, 8, 1),
        "fashion-mnist": (10, 28, 1),
        "cifar10": (10, 32, 3),
        "cifar100": (100, 32, 3),
        "tiny-imagenet": (200, 64, 3),
        "imagenet": (1000, 224, 3),
    }
    assert set(D.DATASETS) == set(expected)
    for name, (classes, size, channels) in expected.items():
        info = D.dataset_info(name)
        assert info is D.DATASETS[name] and info.name == name
        assert (info.num_classes, info.image_size, info.channels) == (classes, size, channels)
        assert len(info.mean) == len(info.std) == channels
    assert D.dataset_info("imagenet").mean == (0.485, 0.456, 0.406)
    assert D.dataset_info("cifar100").std == (0.2673, 0.2564, 0.2762)


@pytest.mark.parametrize("call", [lambda: D.dataset_info("mnist"), lambda: D.load_dataset("cifar-10")])
def test_unknown_name_lists_valid_names(call):
    with pytest.raises(ValueError) as err:
        call()
    for name in D.DATASETS:
        assert name in str(err.value)


@pytest.mark.parametrize("name", ["digits", "cifar10", "imagenet", "tiny-imagenet"])
def test_bad_split(name, tmp_path):
    with pytest.raises(ValueError, match="split"):
        D.load_dataset(name, split="validation", root=tmp_path)
    if name in ("digits", "cifar10"):  # only the ImageNets call their labelled split val
        with pytest.raises(ValueError, match=f"{name} has no 'val' split"):
            D.load_dataset(name, split="val", root=tmp_path)


@pytest.mark.parametrize("name,make", [("tiny-imagenet", make_tiny), ("imagenet", make_imagenet)])
def test_val_is_the_labelled_test_split_of_the_imagenets(name, make, tmp_path):
    make(tmp_path)
    kwargs = dict(root=tmp_path, expect_classes=3)
    val, test = D.load_dataset(name, split="val", **kwargs), D.load_dataset(name, split="test", **kwargs)
    assert val.samples == test.samples and len(val) > 0


def test_empty_class_folder_and_empty_image_are_errors_naming_them(tmp_path):
    make_imagenet(tmp_path)
    empty = tmp_path / "imagenet" / "val" / "n0100"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}: class folder with no images"):
        D.load_dataset("imagenet", split="val", root=tmp_path, expect_classes=3)
    empty.rmdir()
    blank = tmp_path / "imagenet" / "train" / "n0100" / "blank.JPEG"
    blank.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{blank}: empty image file"):
        D.load_dataset("imagenet", split="train", root=tmp_path, expect_classes=3)


def test_truncated_jpeg_error_names_the_file(tmp_path):
    make_imagenet(tmp_path)
    path = tmp_path / "imagenet" / "val" / "n0500" / "n0500_0.JPEG"
    path.write_bytes(path.read_bytes()[:40])  # a cut-off download
    ds = D.load_dataset("imagenet", split="val", root=tmp_path, expect_classes=3)
    index = [i for i, (p, _) in enumerate(ds.samples) if p == path][0]
    with pytest.raises(ValueError, match=f"{path}: cannot be decoded as an image"):
        ds[index]


def test_normalize_roundtrip_and_formula():
    info = D.dataset_info("cifar10")
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    y = info.normalize(x)
    for c in range(3):
        torch.testing.assert_close(y[:, c], (x[:, c] - info.mean[c]) / info.std[c])
    assert y.dtype == torch.float64
    torch.testing.assert_close(info.denormalize(y), x)


def test_pixel_bounds():
    for info in D.DATASETS.values():
        lo, hi = info.pixel_bounds()
        assert lo.shape == hi.shape == (info.channels, 1, 1)
        for c in range(info.channels):
            assert lo[c, 0, 0].item() == pytest.approx(-info.mean[c] / info.std[c], rel=1e-6)
            assert hi[c, 0, 0].item() == pytest.approx((1 - info.mean[c]) / info.std[c], rel=1e-6)
        assert (lo < 0).all() and (hi > 0).all()
    info = D.dataset_info("cifar100")
    lo, hi = info.pixel_bounds()
    img = torch.rand(3, 6, 6)
    n = info.normalize(img)
    assert (n >= lo - 1e-6).all() and (n <= hi + 1e-6).all()
    torch.testing.assert_close(info.normalize(torch.zeros(3, 1, 1)), lo)
    torch.testing.assert_close(info.normalize(torch.ones(3, 1, 1)), hi)


# --------------------------------------------------------------------------- digits


def _sklearn_digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    return d, train_test_split(d.images / 16.0, d.target, test_size=0.2, stratify=d.target, random_state=0)


def test_digits_split_sizes_balance_and_pixels():
    d, (x_tr, x_te, y_tr, y_te) = _sklearn_digits_split()
    train, test = D.load_dataset("digits"), D.load_dataset("digits", split="test")
    assert (len(train), len(test)) == (1437, 360)
    assert torch.equal(train.targets, torch.from_numpy(y_tr).long())
    assert torch.equal(test.targets, torch.from_numpy(y_te).long())
    # stratified: each class split 80/20 of its full count, and nothing is lost
    full = np.bincount(d.target, minlength=10)
    n_tr, n_te = train.targets.bincount(minlength=10).numpy(), test.targets.bincount(minlength=10).numpy()
    assert np.array_equal(n_tr + n_te, full)
    assert np.all(np.abs(n_te - 0.2 * full) <= 1)
    assert n_te.min() >= 35 and n_te.max() <= 37
    x, y = train[5]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    np.testing.assert_allclose(denorm(train, x)[0].numpy(), x_tr[5], atol=1e-6)
    raw = denorm(test, test.tensors()[0]) * 16
    assert torch.allclose(raw, raw.round(), atol=1e-4) and raw.min() >= -1e-4 and raw.max() <= 16 + 1e-4


def test_digits_stats_recomputed():
    _, (x_tr, _, _, _) = _sklearn_digits_split()
    info = D.dataset_info("digits")
    assert info.mean == (round(float(x_tr.mean()), 4),)
    assert info.std == (round(float(x_tr.std()), 4),)
    x, _ = D.load_dataset("digits").tensors()
    assert abs(x.mean().item()) < 1e-3 and abs(x.std(correction=0).item() - 1) < 1e-3


# --------------------------------------------------------------------------- fashion-mnist


@pytest.fixture
def no_system_fashion(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "SYSTEM_FASHION_MNIST", tmp_path / "no-system-copy")


def _check_fashion(ds, images, labels):
    assert len(ds) == len(labels)
    assert torch.equal(ds.targets, torch.from_numpy(labels).long())
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == labels[3]
    torch.testing.assert_close(denorm(ds, x)[0], torch.from_numpy(images[3]).float() / 255, rtol=0, atol=1e-6)
    xs, ys = ds.tensors()
    torch.testing.assert_close(denorm(ds, xs)[:, 0], torch.from_numpy(images).float() / 255, rtol=0, atol=1e-6)
    assert torch.equal(ys, ds.targets)


def test_fashion_gz_in_own_folder(tmp_path, no_system_fashion):
    ref = make_fashion(tmp_path / "fashion-mnist", gz=True)
    for split in ("train", "test"):
        _check_fashion(D.load_dataset("fashion-mnist", split=split, root=tmp_path), *ref[split])


def test_fashion_torchvision_layout_plain_files_and_search_order(tmp_path, no_system_fashion):
    ref_tv = make_fashion(tmp_path / "FashionMNIST" / "raw", gz=False, seed=3)
    _check_fashion(D.load_dataset("fashion-mnist", root=tmp_path), *ref_tv["train"])
    ref_own = make_fashion(tmp_path / "fashion-mnist", gz=True, seed=5, n_train=7)
    _check_fashion(D.load_dataset("fashion-mnist", root=tmp_path), *ref_own["train"])


def test_fashion_system_folder_is_searched_last(tmp_path, monkeypatch):
    ref = make_fashion(tmp_path / "system", gz=True, seed=9)
    monkeypatch.setattr(D, "SYSTEM_FASHION_MNIST", tmp_path / "system")
    _check_fashion(D.load_dataset("fashion-mnist", split="test", root=tmp_path / "root"), *ref["test"])


def test_fashion_missing_message(tmp_path, no_system_fashion):
    with pytest.raises(FileNotFoundError) as err:
        D.load_dataset("fashion-mnist", root=tmp_path)
    msg = str(err.value)
    for piece in (tmp_path / "fashion-mnist", tmp_path / "FashionMNIST" / "raw", tmp_path / "no-system-copy"):
        assert str(piece) in msg
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "download=True",
    ):
        assert stem in msg


def test_fashion_download_uses_torchvision_then_reads_raw(tmp_path, no_system_fashion, monkeypatch):
    import torchvision.datasets

    calls = []
    written = {}

    class FakeFashionMNIST:
        def __init__(self, root, train=True, download=False, **_):
            calls.append((root, train, download))
            written.update(make_fashion(Path(root) / "FashionMNIST" / "raw", gz=True, seed=11))

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    with pytest.raises(FileNotFoundError):
        D.load_dataset("fashion-mnist", root=tmp_path)
    assert not calls
    ds = D.load_dataset("fashion-mnist", split="test", root=tmp_path, download=True)
    assert calls == [(str(tmp_path), False, True)]
    _check_fashion(ds, *written["test"])


def test_read_idx_header_and_errors(tmp_path):
    arr = np.arange(-6, 18, dtype=np.int32).reshape(2, 3, 4) * 1000
    write_idx(tmp_path / "a", arr, gz=False)
    out = D.read_idx(tmp_path / "a")
    assert out.shape == (2, 3, 4) and np.array_equal(out, arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="idx"):
        D.read_idx(tmp_path / "bad")
    raw = (tmp_path / "a").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-4])
    with pytest.raises(ValueError, match="payload"):
        D.read_idx(tmp_path / "short")


def test_real_debian_fashion_mnist():
    folder = Path(D.SYSTEM_FASHION_MNIST)
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Debian package dataset-fashion-mnist not installed ({folder} missing)")
    missing_root = Path("/nonexistent-dire-root")
    train = D.load_dataset("fashion-mnist", root=missing_root)
    test = D.load_dataset("fashion-mnist", split="test", root=missing_root)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.targets.bincount().tolist() == [6000] * 10
    assert test.targets.bincount().tolist() == [1000] * 10
    x, y = test[0]
    assert x.shape == (1, 28, 28) and 0 <= y < 10
    pix = train.pixels.float() / 255
    info = train.info
    assert abs(pix.mean().item() - info.mean[0]) < 5e-4 and abs(pix.std().item() - info.std[0]) < 5e-4


# --------------------------------------------------------------------------- cifar


def _chw(flat: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(flat.reshape(-1, 3, 32, 32)).float() / 255


def test_cifar10_pickles(tmp_path):
    ref = make_cifar10(tmp_path)
    for split, n in (("train", 10), ("test", 3)):
        ds = D.load_dataset("cifar10", split=split, root=tmp_path)
        x_ref, y_ref = ref[split]
        assert len(ds) == n
        assert ds.targets.tolist() == y_ref.tolist()
        x, y = ds[n - 1]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == y_ref[-1]
        pix = denorm(ds, x)
        # row-major CHW: flat index c*1024 + row*32 + col
        for c, r, col in ((0, 0, 0), (1, 5, 17), (2, 31, 30)):
            assert pix[c, r, col].item() == pytest.approx(x_ref[n - 1, c * 1024 + r * 32 + col] / 255, abs=1e-6)
        xs, ys = ds.tensors()
        torch.testing.assert_close(denorm(ds, xs), _chw(x_ref), rtol=0, atol=1e-6)
        torch.testing.assert_close(xs[1], ds[1][0])
        assert torch.equal(ys, torch.from_numpy(y_ref).long())
    assert ds.classes == tuple(f"name{i}" for i in range(10))


def test_cifar100_uses_fine_labels(tmp_path):
    ref = make_cifar100(tmp_path)
    for split in ("train", "test"):
        ds = D.load_dataset("cifar100", split=split, root=tmp_path)
        x_ref, y_ref = ref[split]
        assert ds.info.num_classes == 100 and len(ds) == len(y_ref)
        assert ds.targets.tolist() == y_ref.tolist()
        torch.testing.assert_close(denorm(ds, ds.tensors()[0]), _chw(x_ref), rtol=0, atol=1e-6)
        c = int(y_ref[2])
        assert ds.class_indices(c).tolist() == [2]


def test_class_indices_and_class_images(tmp_path):
    make_cifar10(tmp_path)
    ds = D.load_dataset("cifar10", root=tmp_path)
    labels = ds.targets.numpy()
    for c in range(10):
        idx = ds.class_indices(c)
        assert idx.dtype == torch.long and idx.tolist() == np.flatnonzero(labels == c).tolist()
        imgs = ds.class_images(c)
        assert imgs.shape == (len(idx), 3, 32, 32)
        for k, i in enumerate(idx.tolist()):
            torch.testing.assert_close(imgs[k], ds[i][0])
    c = int(np.bincount(labels).argmax())  # class 3: three times in the fixture
    idx = ds.class_indices(c)
    assert c == 3 and idx.tolist() == [0, 2, 5]
    torch.testing.assert_close(ds.class_images(c, limit=2), ds.class_images(c)[:2])
    a = ds.class_images(c, limit=2, generator=torch.Generator().manual_seed(0))
    b = ds.class_images(c, limit=2, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    full = ds.class_images(c)
    assert all(any(torch.equal(img, f) for f in full) for img in a)
    picks = {tuple(torch.randperm(3, generator=torch.Generator().manual_seed(s))[:2].tolist()) for s in range(20)}
    got = {
        tuple(
            next(k for k in range(3) if torch.equal(img, full[k]))
            for img in ds.class_images(c, limit=2, generator=torch.Generator().manual_seed(s))
        )
        for s in range(20)
    }
    assert got == picks and len(got) > 1  # really random, and seeded by the generator
    assert ds.class_images(c, limit=10).shape[0] == 3
    assert ds.class_images(0).shape == (0, 3, 32, 32)  # class 0 absent from the fixture


@pytest.mark.parametrize("bad", [-1, 10, 11])
def test_class_out_of_range(tmp_path, bad):
    make_cifar10(tmp_path)
    ds = D.load_dataset("cifar10", split="test", root=tmp_path)
    with pytest.raises(ValueError, match="out of range"):
        ds.class_indices(bad)
    with pytest.raises(ValueError, match="out of range"):
        ds.class_images(bad)


def test_getitem_index_bounds(tmp_path):
    make_cifar10(tmp_path)
    ds = D.load_dataset("cifar10", split="test", root=tmp_path)
    torch.testing.assert_close(ds[-1][0], ds[2][0])
    with pytest.raises(IndexError):
        ds[3]


@pytest.mark.parametrize(
    "name, folder, files",
    [
        ("cifar10", "cifar-10-batches-py", ["data_batch_1", "data_batch_5", "test_batch"]),
        ("cifar100", "cifar-100-python", ["train", "test"]),
    ],
)
def test_cifar_missing_message(tmp_path, name, folder, files):
    with pytest.raises(FileNotFoundError) as err:
        D.load_dataset(name, root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / folder) in msg and "download=True" in msg
    for f in files:
        assert f in msg


def test_cifar_partial_folder_is_missing(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        D.load_dataset("cifar10", root=tmp_path)
    assert len(D.load_dataset("cifar10", split="test", root=tmp_path)) == 3


def test_cifar_download_uses_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train=True, download=False, **_):
            calls.append((root, train, download))
            make_cifar10(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    ds = D.load_dataset("cifar10", split="test", root=tmp_path, download=True)
    assert calls == [(str(tmp_path), False, True)] and len(ds) == 3
    D.load_dataset("cifar10", split="test", root=tmp_path, download=True)
    assert len(calls) == 1  # present now: no second download


def test_expect_classes_rejected_for_fixed_datasets():
    with pytest.raises(ValueError):
        D.load_dataset("digits", expect_classes=3)


# --------------------------------------------------------------------------- tiny-imagenet


def _assert_color(ds, x, color):
    pix = denorm(ds, x)
    ref = torch.tensor(color, dtype=torch.float32).view(3, 1, 1) / 255
    assert (pix - ref).abs().max().item() <= JPEG_TOL


def test_tiny_imagenet(tmp_path):
    wnids, train_ref, val_ref = make_tiny(tmp_path)
    train = D.load_dataset("tiny-imagenet", root=tmp_path, expect_classes=3)
    assert train.info.num_classes == 3 and train.info.image_size == 64 and train.classes == tuple(wnids)
    assert len(train) == 6
    assert train.targets.tolist() == [label for _, label in train_ref] == [0, 0, 1, 1, 2, 2]
    for i, (color, _) in enumerate(train_ref):
        x, y = train[i]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        _assert_color(train, x, color)
    val = D.load_dataset("tiny-imagenet", split="test", root=tmp_path, expect_classes=3)
    assert len(val) == 4
    assert val.targets.tolist() == [label for _, label in val_ref] == [2, 0, 1, 0]
    for i, (color, _) in enumerate(val_ref):
        x, _ = val[i]
        assert x.shape == (3, 64, 64)  # incl. the 80x64 image, resized/cropped
        _assert_color(val, x, color)
    assert val.class_indices(0).tolist() == [1, 3]
    xs, ys = val.tensors()
    assert xs.shape == (4, 3, 64, 64) and torch.equal(ys, val.targets)
    torch.testing.assert_close(val.class_images(0), xs[[1, 3]])


def test_wordnet_ids_get_the_datasets_own_words_for_figures(tmp_path):
    wnids, _, _ = make_tiny(tmp_path)
    assert D.load_dataset("tiny-imagenet", root=tmp_path, expect_classes=3).names == tuple(wnids)  # no words.txt
    # the archive's words.txt lists every WordNet id (tab, comma-separated synonyms); the first word names a class
    words = "n0100\tgoldfish, Carassius auratus\nn0200\tEuropean fire salamander\nn9999\tunused\n"
    (tmp_path / "tiny-imagenet-200" / "words.txt").write_text(words)
    train = D.load_dataset("tiny-imagenet", root=tmp_path, expect_classes=3)
    assert train.classes == tuple(wnids) and train.names == ("n0300", "goldfish", "European fire salamander")
    assert D.validation_split(train, 1)[1].names == train.names  # subsets keep them
    make_imagenet(tmp_path)  # LOC_synset_mapping.txt: "<wnid> <words>"
    (tmp_path / "imagenet" / "LOC_synset_mapping.txt").write_text("n0100 tench, Tinca tinca\nn0900 toilet tissue\n")
    assert D.load_dataset("imagenet", root=tmp_path, expect_classes=3).names == ("tench", "n0500", "toilet tissue")
    fashion = D.TensorImageDataset(D.dataset_info("fashion-mnist"), torch.zeros(1, 1, 28, 28), [0], D.FASHION_CLASSES)
    assert fashion.names[:2] == ("T-shirt/top", "Trouser")


def test_tiny_imagenet_class_count_and_missing(tmp_path):
    make_tiny(tmp_path)
    with pytest.raises(ValueError, match="expected 200"):
        D.load_dataset("tiny-imagenet", root=tmp_path)
    (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        D.load_dataset("tiny-imagenet", split="test", root=tmp_path, expect_classes=3)
    empty = tmp_path / "empty"
    with pytest.raises(FileNotFoundError) as err:
        D.load_dataset("tiny-imagenet", root=empty)
    msg = str(err.value)
    for piece in (str(empty / "tiny-imagenet-200"), "wnids.txt", "train/<wnid>/images", "val_annotations.txt", "unzip"):
        assert piece in msg


# --------------------------------------------------------------------------- imagenet


def test_imagenet_folder_mapping(tmp_path):
    layout = make_imagenet(tmp_path)
    train = D.load_dataset("imagenet", root=tmp_path, expect_classes=3)
    val = D.load_dataset("imagenet", split="test", root=tmp_path, expect_classes=3)
    wnids = sorted(layout["train"])
    assert train.classes == val.classes == tuple(wnids) == ("n0100", "n0500", "n0900")
    assert train.info.num_classes == 3 and train.info.image_size == 224
    expected_train = [(c, wnids.index(w)) for w in wnids for c in layout["train"][w]]
    assert train.targets.tolist() == [y for _, y in expected_train]
    expected_val = [(c, wnids.index(w)) for w in sorted(layout["val"]) for c in layout["val"][w]]
    assert val.targets.tolist() == [y for _, y in expected_val] == [1, 2]
    for ds, expected in ((train, expected_train), (val, expected_val)):
        for i, (color, label) in enumerate(expected):
            x, y = ds[i]
            assert x.shape == (3, 224, 224) and y == label
            _assert_color(ds, x, color)
    assert val.class_indices(0).numel() == 0 and val.class_images(2).shape == (1, 3, 224, 224)


def test_imagenet_resize_then_center_crop(tmp_path):
    # 320x256 image, left 40 columns black: resize(256) is a no-op, crop 224 drops 48 px each side
    base = tmp_path / "imagenet"
    img = np.full((256, 320, 3), 255, dtype=np.uint8)
    img[:, :40] = 0
    for split in ("train", "val"):
        (base / split / "n01").mkdir(parents=True)
        Image.fromarray(img).save(base / split / "n01" / "a.JPEG", quality=95)
    ds = D.load_dataset("imagenet", root=tmp_path, expect_classes=1)
    pix = denorm(ds, ds[0][0])
    assert pix.shape == (3, 224, 224)
    assert pix[:, :, 4:].min().item() > 1 - JPEG_TOL  # black band cropped away (ringing aside)
    # small landscape image: shorter side 100 -> 256 (width 384), centre crop 224
    img2 = np.zeros((100, 150, 3), dtype=np.uint8)
    img2[:, 50:100] = 255  # middle third white, in the crop only within cols 48..176 of 224
    Image.fromarray(img2).save(base / "val" / "n01" / "b.JPEG", quality=95)
    val = D.load_dataset("imagenet", split="test", root=tmp_path, expect_classes=1)
    pix = denorm(val, val[1][0])
    assert pix.shape == (3, 224, 224)
    assert pix[:, :, 60:164].min().item() > 0.9 and pix[:, :, :36].max().item() < 0.1
    assert pix[:, :, -36:].max().item() < 0.1


def test_imagenet_errors(tmp_path):
    make_imagenet(tmp_path)
    with pytest.raises(ValueError, match="found 3 classes.*expected 1000"):
        D.load_dataset("imagenet", root=tmp_path)
    solid_jpeg(tmp_path / "imagenet" / "val" / "n7777" / "x.JPEG", COLORS[0])
    with pytest.raises(ValueError, match="n7777"):
        D.load_dataset("imagenet", split="test", root=tmp_path, expect_classes=3)
    empty = tmp_path / "nothing"
    with pytest.raises(FileNotFoundError) as err:
        D.load_dataset("imagenet", split="test", root=empty)
    msg = str(err.value)
    for piece in (str(empty / "imagenet" / "train"), str(empty / "imagenet" / "val"), "<wnid>", "download=True"):
        assert piece in msg


def test_file_dataset_works_with_dataloader(tmp_path):
    make_tiny(tmp_path)
    ds = D.load_dataset("tiny-imagenet", root=tmp_path, expect_classes=3)
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)))
    assert x.shape == (4, 3, 64, 64) and y.tolist() == [0, 0, 1, 1]

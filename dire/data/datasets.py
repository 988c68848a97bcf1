"""Image datasets by name, one loader API for all of them.

``load_dataset(name, split=...)`` returns an :class:`ImageDataset` whose items are
*normalized* float32 images ``[C, H, W]`` and integer labels. Two storage kinds:

* :class:`TensorImageDataset` keeps every image in memory (digits, fashion-mnist,
  cifar10, cifar100) and normalizes on access;
* :class:`FileImageDataset` keeps ``(path, label)`` pairs and decodes each JPEG on
  access (tiny-imagenet, imagenet).

The on-disk layouts each loader expects are described in ``data/README.md`` and in the
``FileNotFoundError`` raised when a dataset is missing. Files are parsed here directly
(idx for Fashion-MNIST, pickles for CIFAR, image folders for the ImageNets);
torchvision is only used to *download* the sets it can fetch.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "DATASETS",
    "SPLITS",
    "SYSTEM_FASHION_MNIST",
    "DatasetInfo",
    "FileImageDataset",
    "ImageDataset",
    "TensorImageDataset",
    "dataset_info",
    "load_dataset",
    "read_idx",
]

SPLITS = ("train", "test")

#: Where the Debian package ``dataset-fashion-mnist`` installs its files; searched last.
#: Module-level so tests (or unusual systems) can point it elsewhere.
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset: size, channels and normalization statistics.

    ``mean``/``std`` are per channel, for pixels in [0, 1].
    """

    name: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"{self.name}: mean/std need {self.channels} entries each")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std must be positive")

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        dtype = like.dtype if like.is_floating_point() else torch.float32
        mean = torch.tensor(self.mean, dtype=dtype, device=like.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=dtype, device=like.device).view(-1, 1, 1)
        return mean, std

    def normalize(self, x: Tensor) -> Tensor:
        """Map pixels in [0, 1], shaped ``[..., C, H, W]``, to ``(x - mean) / std``."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`normalize`: ``x * std + mean`` (no clamping)."""
        mean, std = self._stats(x)
        return x * std + mean

    def pixel_bounds(self) -> tuple[Tensor, Tensor]:
        """Per-channel ``(lo, hi)`` of valid normalized pixels, each float32 ``[C, 1, 1]``.

        ``lo = (0 - mean) / std`` and ``hi = (1 - mean) / std``; use them to clamp
        synthetic images to the range real images can take.
        """
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return (0.0 - mean) / std, (1.0 - mean) / std


DATASETS: dict[str, DatasetInfo] = {
    # digits: population mean/std over all pixels of the train split (see _digits_split),
    # pixels = sklearn values / 16; tests/test_data.py recomputes them.
    "digits": DatasetInfo("digits", 10, 8, 1, (0.3054,), (0.3761,)),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 28, 1, (0.2861,), (0.3530,)),
    "cifar10": DatasetInfo("cifar10", 10, 32, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("cifar100", 100, 32, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny-imagenet": DatasetInfo("tiny-imagenet", 200, 64, 3, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "imagenet": DatasetInfo("imagenet", 1000, 224, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` registered under ``name``; ``ValueError`` if unknown."""
    try:
        return DATASETS[name]
    except KeyError:
        valid = ", ".join(repr(k) for k in DATASETS)
        raise ValueError(f"unknown dataset {name!r}; valid names: {valid}") from None


# --------------------------------------------------------------------------- datasets


class ImageDataset(torch.utils.data.Dataset):
    """Labelled images of one split; items are ``(normalized float32 [C, H, W], int label)``.

    Attributes:
        info: the dataset's :class:`DatasetInfo` (``num_classes`` is the number of
            classes actually loaded, which differs from the registry entry only when
            ``load_dataset(..., expect_classes=...)`` was used).
        targets: ``LongTensor [N]`` of labels in dataset order.
        classes: class names (or WordNet ids), index = label.
        names: names to show in figures and tables: ``classes``, or for WordNet ids the
            dataset's own words for them when it ships them (Tiny-ImageNet's ``words.txt``,
            ImageNet's ``LOC_synset_mapping.txt``).

    Subclasses implement :meth:`_pixels` (one image in [0, 1]).
    """

    info: DatasetInfo
    targets: Tensor
    classes: tuple[str, ...]
    names: tuple[str, ...]
    #: True when a batch is one indexing operation on tensors in memory; False when every image is decoded on
    #: access (then ``dire.nets.train.loader`` decodes in worker processes by default)
    in_memory: bool = False

    def __init__(
        self, info: DatasetInfo, targets: Tensor, classes: Sequence[str], names: Sequence[str] | None = None
    ) -> None:
        targets = torch.as_tensor(targets, dtype=torch.long)
        if targets.ndim != 1:
            raise ValueError(f"targets must be 1-d, got shape {tuple(targets.shape)}")
        if len(classes) != info.num_classes:
            raise ValueError(f"{len(classes)} class names for {info.num_classes} classes")
        if targets.numel() and (targets.min() < 0 or targets.max() >= info.num_classes):
            raise ValueError(f"labels must lie in [0, {info.num_classes})")
        self.info = info
        self.targets = targets
        self.classes = tuple(classes)
        self.names = self.classes if names is None else tuple(names)
        if len(self.names) != len(self.classes):
            raise ValueError(f"{len(self.names)} display names for {len(self.classes)} classes")

    def __len__(self) -> int:
        return int(self.targets.numel())

    def _pixels(self, i: int) -> Tensor:
        """Image ``i`` as float32 ``[C, H, W]`` in [0, 1] (not normalized)."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i %= len(self)
        return self.info.normalize(self._pixels(i)), int(self.targets[i])

    def batch(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Normalized images ``[B, C, H, W]`` and labels ``[B]`` at ``indices``.

        In-memory datasets gather the whole batch with one indexing operation
        (``dire.nets.train.loader`` uses this; a plain ``DataLoader`` uses ``__getitem__``).
        """
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return self._stack(idx), self.targets[idx]

    def _check_class(self, c: int) -> int:
        c = int(c)
        if not 0 <= c < self.info.num_classes:
            raise ValueError(f"class {c} out of range [0, {self.info.num_classes})")
        return c

    def class_indices(self, c: int, *, limit: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Indices (``LongTensor``) of the images labelled ``c``: all of them ascending, or with ``limit`` the
        subset :meth:`class_images` draws (same rule, same order), so a caller can decode it a batch at a time."""
        c = self._check_class(c)
        return self._select(torch.nonzero(self.targets == c).flatten(), limit, generator)

    def _select(self, idx: Tensor, limit: int | None, generator: torch.Generator | None) -> Tensor:
        if limit is None:
            return idx
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if generator is None:
            return idx[:limit]
        perm = torch.randperm(idx.numel(), generator=generator)
        return idx[perm[:limit]]

    def _stack(self, idx: Tensor) -> Tensor:
        """Normalized images at ``idx`` stacked ``[k, C, H, W]``, decoded straight into one tensor and normalized in
        place (the same values as stacking a list, then normalizing): a batch costs one batch of memory, not four."""
        size = self.info.image_size
        out = torch.empty(len(idx), self.info.channels, size, size)
        for j, i in enumerate(idx.tolist()):
            out[j] = self._pixels(i)
        mean, std = self.info._stats(out)
        return out.sub_(mean).div_(std)

    def class_images(self, c: int, *, limit: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Normalized images of class ``c``, stacked ``[k, C, H, W]``.

        ``limit=None`` returns all of them in dataset order. With ``limit`` and no
        ``generator`` the first ``limit`` (in dataset order); with a ``generator`` a
        random subset of ``limit`` drawn with ``torch.randperm(..., generator=generator)``
        (in the drawn order). ``limit`` larger than the class gives the whole class.
        """
        return self._stack(self.class_indices(c, limit=limit, generator=generator))

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All images (normalized, ``[N, C, H, W]``) and labels ``[N]``.

        Loads the whole split into memory: fine for digits/MNIST/CIFAR, not for ImageNet.
        """
        return self._stack(torch.arange(len(self))), self.targets.clone()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.name!r}, n={len(self)}, classes={self.info.num_classes})"


class TensorImageDataset(ImageDataset):
    """In-memory dataset: ``pixels`` is ``uint8`` (0..255) or float (0..1), ``[N, C, H, W]``."""

    pixels: Tensor
    in_memory = True

    def __init__(self, info: DatasetInfo, pixels: Tensor, targets: Tensor, classes: Sequence[str]) -> None:
        super().__init__(info, targets, classes)
        size = info.image_size
        if tuple(pixels.shape[1:]) != (info.channels, size, size):
            raise ValueError(f"pixels must be [N, {info.channels}, {size}, {size}], got {tuple(pixels.shape)}")
        if pixels.shape[0] != len(self):
            raise ValueError(f"{pixels.shape[0]} images but {len(self)} labels")
        if pixels.dtype != torch.uint8 and not pixels.is_floating_point():
            raise TypeError(f"pixels must be uint8 or float, got {pixels.dtype}")
        self.pixels = pixels

    def _to_unit(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8:
            return x.to(torch.float32) / 255.0
        return x.to(torch.float32)

    def _pixels(self, i: int) -> Tensor:
        return self._to_unit(self.pixels[i])

    def _stack(self, idx: Tensor) -> Tensor:
        return self.info.normalize(self._to_unit(self.pixels[idx]))


class FileImageDataset(ImageDataset):
    """Image files decoded on access: PIL open → RGB → resize shorter side → center crop.

    ``samples`` lists ``(path, label)`` pairs. Each image is resized so its shorter
    side is ``resize_to`` (skipped when it already is) and center-cropped to
    ``info.image_size``; ``resize_to = image_size`` is a plain shorter-side resize,
    ``round(256 * image_size / 224)`` the standard ImageNet evaluation transform.
    """

    def __init__(
        self,
        info: DatasetInfo,
        samples: Sequence[tuple[str | Path, int]],
        classes: Sequence[str],
        *,
        resize_to: int | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        # the paths as one numpy byte array, not a list of objects: a loader worker reading a Python object writes
        # its reference count, so over an epoch every worker would copy the pages of the whole list (ImageNet's
        # 1.28 M (Path, label) pairs: ~440 MB of objects by tracemalloc; as 49-byte paths: 60 MB, never written)
        self._paths = np.array([os.fsencode(p) for p, _ in samples], dtype=np.bytes_)
        super().__init__(info, torch.tensor([int(y) for _, y in samples], dtype=torch.long), classes, names)
        self.resize_to = info.image_size if resize_to is None else int(resize_to)
        if self.resize_to < info.image_size:
            raise ValueError(f"resize_to {self.resize_to} < image_size {info.image_size}")

    @property
    def samples(self) -> list[tuple[Path, int]]:
        """The ``(path, label)`` pairs in dataset order, built on each access (for inspection, not per image)."""
        return [(self.path(i), int(y)) for i, y in enumerate(self.targets.tolist())]

    def path(self, i: int) -> Path:
        """The file of image ``i``."""
        return Path(os.fsdecode(self._paths[i]))

    def _pixels(self, i: int) -> Tensor:
        import torchvision.transforms.functional as TF

        path = self.path(i)
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (OSError, SyntaxError, ValueError) as err:  # PIL: truncated, corrupt or not an image
            raise ValueError(f"{path}: cannot be decoded as an image ({err}); replace or remove the file") from None
        img = TF.resize(img, self.resize_to)  # no-op when the shorter side already fits
        img = TF.center_crop(img, [self.info.image_size, self.info.image_size])
        return TF.pil_to_tensor(img).to(torch.float32) / 255.0


class SubsetImageDataset(ImageDataset):
    """The images of ``base`` at ``indices`` (in that order), sharing its storage."""

    def __init__(self, base: ImageDataset, indices: Tensor) -> None:
        self.base, self.indices = base, torch.as_tensor(indices, dtype=torch.long)
        super().__init__(base.info, base.targets[self.indices], base.classes, base.names)
        self.in_memory = base.in_memory

    def _pixels(self, i: int) -> Tensor:
        return self.base._pixels(int(self.indices[i]))

    def _stack(self, idx: Tensor) -> Tensor:
        return self.base._stack(self.indices[idx])


def validation_split(dataset: ImageDataset, per_class: int, *, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Hold out ``per_class`` images of every class of a *training* split: ``(rest, validation)``.

    The draw is a seeded permutation per class, so the same ``(per_class, seed)`` always holds out the same
    images; both parts keep dataset order. Used for choosing settings (e.g. DiRe's weights) without
    touching the test split.
    """
    if per_class < 1:
        raise ValueError(f"validation per_class must be >= 1; got {per_class}")
    held = []
    for c in range(dataset.info.num_classes):
        idx = dataset.class_indices(c)
        if len(idx) <= per_class:
            raise ValueError(
                f"class {c} of {dataset.info.name} has {len(idx)} training images; holding out "
                f"{per_class} would leave none. Use a smaller validation per_class"
            )
        gen = torch.Generator().manual_seed(seed * 1_000_003 + c)
        held.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    mask = torch.zeros(len(dataset), dtype=torch.bool)
    mask[torch.cat(held)] = True
    return (
        SubsetImageDataset(dataset, torch.nonzero(~mask).flatten()),
        SubsetImageDataset(dataset, torch.nonzero(mask).flatten()),
    )


# --------------------------------------------------------------------------- loading


def load_dataset(
    name: str,
    *,
    split: str = "train",
    root: str | Path = "data",
    download: bool = False,
    expect_classes: int | None = None,
) -> ImageDataset:
    """Load split ``"train"`` or ``"test"`` of dataset ``name`` from ``root``.

    For tiny-imagenet and imagenet ``"test"`` is the official labelled validation split, also accepted as
    ``"val"``; their folders are scanned when loaded (an empty class folder or an empty image file is an
    error naming it) and an image that cannot be decoded raises an error naming the file.
    ``download=True`` fetches fashion-mnist and CIFAR with torchvision when they are not
    on disk; digits ships with scikit-learn; the ImageNets must be placed by hand.

    ``expect_classes`` (tiny-imagenet and imagenet only) is the number of classes the
    folder must hold, default the registry's ``num_classes`` (200 / 1000); a different
    count raises ``ValueError``. With it, e.g. a 3-class ImageNet-style folder loads and
    the returned ``info.num_classes`` is 3. For the other datasets it must be ``None``
    or equal to ``num_classes``.

    Raises:
        ValueError: unknown ``name``, bad ``split``, class-count mismatch.
        FileNotFoundError: data not on disk (message lists folders searched, files
            expected and how to get them).
    """
    info = dataset_info(name)
    if split == "val" and name in _FOLDER_LOADERS:
        split = "test"  # the ImageNets' labelled split is their val folder
    if split not in SPLITS:
        also = " (and 'val' for tiny-imagenet and imagenet)" if split != "val" else f"; {name} has no 'val' split"
        raise ValueError(f"split must be one of {SPLITS}{also}, got {split!r}")
    root = Path(root)
    if name in _FOLDER_LOADERS:
        expected = info.num_classes if expect_classes is None else int(expect_classes)
        return _FOLDER_LOADERS[name](info, split == "train", root, expected)
    if expect_classes is not None and expect_classes != info.num_classes:
        raise ValueError(f"{name} always has {info.num_classes} classes; expect_classes={expect_classes}")
    return _ARRAY_LOADERS[name](info, split == "train", root, download)


def _missing(what: str, searched: Sequence[Path], expected: Sequence[str], how: str) -> FileNotFoundError:
    """A ``FileNotFoundError`` naming the folders searched, files expected and a remedy."""
    folders = "\n".join(f"  {p}" for p in searched)
    files = "\n".join(f"  {f}" for f in expected)
    return FileNotFoundError(
        f"{what} not found. Searched:\n{folders}\nExpected there:\n{files}\n{how}\n"
        "See data/README.md for the layout of every dataset."
    )


# ---- digits


def _digits_split(train: bool) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits as ``(images [N, 8, 8] float64 in [0, 1], labels [N])``.

    The split is ``train_test_split(test_size=0.2, stratify=y, random_state=0)``:
    1437 train, 360 test images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        digits.images / 16.0, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    return (x_tr, y_tr) if train else (x_te, y_te)


def _load_digits(info: DatasetInfo, train: bool, root: Path, download: bool) -> ImageDataset:
    x, y = _digits_split(train)
    pixels = torch.from_numpy(x).to(torch.float32).unsqueeze(1)
    return TensorImageDataset(info, pixels, torch.from_numpy(y), [str(i) for i in range(10)])


# ---- fashion-mnist (idx files)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (optionally ``.gz``): magic ``00 00 <type> <ndim>``, then ``ndim``
    big-endian uint32 sizes, then the data, big-endian. Returns an array of that shape."""
    path = Path(path)
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(f"{path}: header says {dims} but payload has {len(raw) - header} bytes")
    data = np.frombuffer(raw, dtype=dtype, offset=header, count=count).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def _fashion_files(train: bool) -> tuple[str, str]:
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _fashion_folders(root: Path) -> list[Path]:
    """Folders searched for Fashion-MNIST, in order."""
    return [root / "fashion-mnist", root / "FashionMNIST" / "raw", Path(SYSTEM_FASHION_MNIST)]


def _find_fashion(folders: Sequence[Path], train: bool) -> tuple[Path, Path] | None:
    stems = _fashion_files(train)
    for folder in folders:
        found = [_find_file(folder, s) for s in stems]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    return None


def _load_fashion(info: DatasetInfo, train: bool, root: Path, download: bool) -> ImageDataset:
    folders = _fashion_folders(root)
    found = _find_fashion(folders, train)
    if found is None and download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=train, download=True)
        found = _find_fashion([root / "FashionMNIST" / "raw"], train)
    if found is None:
        raise _missing(
            "Fashion-MNIST",
            folders,
            [f"{s}[.gz]" for s in (*_fashion_files(True), *_fashion_files(False))],
            "Pass download=True to fetch it with torchvision into "
            f"{root / 'FashionMNIST' / 'raw'}, copy the four idx files into "
            f"{root / 'fashion-mnist'}, or install the Debian package dataset-fashion-mnist.",
        )
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST idx shapes {images.shape} / {labels.shape} do not match")
    pixels = torch.from_numpy(images.astype(np.uint8, copy=False)).unsqueeze(1)
    targets = torch.from_numpy(labels.astype(np.int64, copy=False))
    return TensorImageDataset(info, pixels, targets, FASHION_CLASSES)


# ---- cifar (python pickles)

_CIFAR = {
    # name: (folder, train files, test files, label key, torchvision class name)
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        b"labels",
        "CIFAR10",
    ),
    "cifar100": ("cifar-100-python", ("train",), ("test",), b"fine_labels", "CIFAR100"),
}


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _cifar_class_names(name: str, folder: Path) -> tuple[str, ...]:
    """Class names from the meta pickle when present, else built-in / numeric names."""
    meta_file, key = ("batches.meta", b"label_names") if name == "cifar10" else ("meta", b"fine_label_names")
    if (folder / meta_file).is_file():
        names = _unpickle(folder / meta_file).get(key)
        if names:
            return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return CIFAR10_CLASSES if name == "cifar10" else tuple(str(i) for i in range(100))


def _load_cifar(info: DatasetInfo, train: bool, root: Path, download: bool) -> ImageDataset:
    sub, train_files, test_files, label_key, tv_name = _CIFAR[info.name]
    folder = root / sub
    files = train_files if train else test_files
    all_files = (*train_files, *test_files)
    if not all((folder / f).is_file() for f in files) and download:
        import torchvision.datasets

        getattr(torchvision.datasets, tv_name)(str(root), train=train, download=True)
    if not all((folder / f).is_file() for f in files):
        raise _missing(
            info.name.upper().replace("CIFAR", "CIFAR-"),
            [folder],
            all_files,
            f"Pass download=True to fetch it with torchvision into {root}, or unpack the "
            f"official python-version archive there (it creates {sub}/).",
        )
    images, labels = [], []
    for f in files:
        batch = _unpickle(folder / f)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{folder / f}: b'data' must be [N, 3072], got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    pixels = torch.from_numpy(np.concatenate(images))
    targets = torch.from_numpy(np.concatenate(labels))
    return TensorImageDataset(info, pixels, targets, _cifar_class_names(info.name, folder))


# ---- tiny-imagenet and imagenet (image folders)


def _image_files(folder: Path, *, required: bool = False) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; with ``required`` an empty folder, or an empty
    (zero-byte) image file, is an error naming it."""
    files = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                if required and entry.stat().st_size == 0:
                    raise ValueError(f"{entry.path}: empty image file; replace or remove it")
                files.append(Path(entry.path))
    if required and not files:
        raise ValueError(
            f"{folder}: class folder with no images ({', '.join(IMAGE_SUFFIXES)}); add its images or "
            "remove the class from the dataset"
        )
    return sorted(files)


def _wordnet_names(wnids: Sequence[str], words: Path) -> list[str] | None:
    """Each wnid's first word from a ``<wnid><space or tab><word>, <synonym>, ...`` file (Tiny-ImageNet's
    ``words.txt``, ImageNet's ``LOC_synset_mapping.txt``); None without the file. A wnid it lacks keeps its id."""
    if not words.is_file():
        return None
    first = {}
    for line in words.read_text().splitlines():
        wnid, _, text = line.strip().partition("\t") if "\t" in line else line.strip().partition(" ")
        if wnid and text.strip():
            first[wnid] = text.split(",")[0].strip()
    return [first.get(w, w) for w in wnids]


def _check_count(name: str, found: int, expected: int, where: Path) -> None:
    if found != expected:
        raise ValueError(
            f"{name}: found {found} classes in {where}, expected {expected} "
            "(pass expect_classes=... to load a subset-sized folder)"
        )


def _load_tiny(info: DatasetInfo, train: bool, root: Path, expected: int) -> ImageDataset:
    base = root / "tiny-imagenet-200"
    layout = [
        "wnids.txt",
        "train/<wnid>/images/*.JPEG",
        "val/images/*.JPEG",
        "val/val_annotations.txt",
    ]
    how = (
        "Download tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) "
        f"and unzip it in {root}; download=True is not supported."
    )
    wnids_file = base / "wnids.txt"
    if not wnids_file.is_file():
        raise _missing("Tiny-ImageNet", [base], layout, how)
    wnids = [w.strip() for w in wnids_file.read_text().splitlines() if w.strip()]
    _check_count(info.name, len(wnids), expected, wnids_file)
    index = {w: i for i, w in enumerate(wnids)}
    samples: list[tuple[Path, int]] = []
    if train:
        for w in wnids:
            folder = base / "train" / w / "images"
            if not folder.is_dir():
                raise _missing(f"Tiny-ImageNet train class {w}", [folder], layout[1:2], how)
            samples.extend((p, index[w]) for p in _image_files(folder, required=True))
    else:
        annotations = base / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise _missing("Tiny-ImageNet val annotations", [base / "val"], layout[2:], how)
        for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise ValueError(f"{annotations}:{line_no}: bad line or unknown wnid: {line!r}")
            path = base / "val" / "images" / fields[0]
            if not path.is_file():
                raise _missing("Tiny-ImageNet val image", [path.parent], [fields[0]], how)
            samples.append((path, index[fields[1]]))
    info = dataclasses.replace(info, num_classes=len(wnids))
    return FileImageDataset(info, samples, wnids, names=_wordnet_names(wnids, base / "words.txt"))


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def _load_imagenet(info: DatasetInfo, train: bool, root: Path, expected: int) -> ImageDataset:
    base = root / "imagenet"
    split_dir = base / ("train" if train else "val")
    layout = ["train/<wnid>/*.JPEG", "val/<wnid>/*.JPEG  (val sorted into the train wnid folders)"]
    how = (
        f"Extract ILSVRC2012 train into {base / 'train'} (one folder per wnid) and the "
        f"50k val images into {base / 'val'}/<wnid>/ (e.g. with the usual valprep.sh); "
        "download=True is not supported."
    )
    train_dir = base / "train"
    if not train_dir.is_dir() or not split_dir.is_dir():
        raise _missing("ImageNet", [train_dir, split_dir], layout, how)
    wnids = _subdirs(train_dir)
    _check_count(info.name, len(wnids), expected, train_dir)
    index = {w: i for i, w in enumerate(wnids)}
    split_wnids = _subdirs(split_dir)
    if not split_wnids and _image_files(split_dir):
        raise ValueError(f"{split_dir} holds loose images: sort them into <wnid>/ folders. {how}")
    unknown = sorted(set(split_wnids) - set(index))
    if unknown:
        raise ValueError(f"{split_dir}: class folders not in {train_dir}: {unknown[:5]}")
    samples = [(p, index[w]) for w in split_wnids for p in _image_files(split_dir / w, required=True)]
    info = dataclasses.replace(info, num_classes=len(wnids))
    return FileImageDataset(
        info,
        samples,
        wnids,
        resize_to=round(256 * info.image_size / 224),
        names=_wordnet_names(wnids, base / "LOC_synset_mapping.txt"),
    )


_ARRAY_LOADERS: dict[str, Callable[[DatasetInfo, bool, Path, bool], ImageDataset]] = {
    "digits": _load_digits,
    "fashion-mnist": _load_fashion,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
}
_FOLDER_LOADERS: dict[str, Callable[[DatasetInfo, bool, Path, int], ImageDataset]] = {
    "tiny-imagenet": _load_tiny,
    "imagenet": _load_imagenet,
}

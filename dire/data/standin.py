"""Stand-in datasets: random images written in a real dataset's own on-disk layout, at its true image size and
class count, so its real loader reads them. The paper profile's dry run (``dire reproduce --profile paper
--dry-run``) runs on them; nothing trained on them means anything.

Every class gets ``per_class`` training images and the first ``rich_classes`` get ``rich_per_class`` (enough
for the synthesis inits, Coverage's k-NN and a validation split); the test split holds ``test_images`` images
of the first classes. Pixels are uniform noise plus a per-class colour offset, so classes differ a little.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from dire.data.datasets import dataset_info

STANDIN_DATASETS = ("cifar10", "cifar100", "tiny-imagenet", "imagenet")
IMAGENET_FILE_SIZE = 256  # stand-in ImageNet files: the loader resizes the shorter side to 256, crops 224


def _counts(num_classes: int, per_class: int, rich_classes: int, rich_per_class: int) -> list[int]:
    return [rich_per_class if c < rich_classes else per_class for c in range(num_classes)]


def _pixels(rng: np.random.Generator, label: int, num_classes: int, size: int) -> np.ndarray:
    """One stand-in image, uint8 [size, size, 3]."""
    hue = np.array([label, label * 7, label * 13]) % num_classes / max(num_classes - 1, 1)
    noise = rng.random((size, size, 3))
    return ((0.5 * noise + 0.5 * hue) * 255).astype(np.uint8)


def _labels(counts: list[int]) -> list[int]:
    return [c for c, n in enumerate(counts) for _ in range(n)]


def _write_cifar(name: str, root: Path, train: list[int], test: list[int], rng: np.random.Generator) -> None:
    num_classes = dataset_info(name).num_classes
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    key = b"labels" if name == "cifar10" else b"fine_labels"

    def batch(labels: list[int]) -> dict:
        data = np.stack([_pixels(rng, y, num_classes, 32).transpose(2, 0, 1).reshape(-1) for y in labels])
        return {b"data": data, key: labels}

    if name == "cifar10":  # five training batches, as the archive has
        parts = [train[i::5] for i in range(5)]
        files = {f"data_batch_{i + 1}": batch(p) for i, p in enumerate(parts)} | {"test_batch": batch(test)}
        meta = ("batches.meta", {b"label_names": [f"class{c}".encode() for c in range(num_classes)]})
    else:
        files = {"train": batch(train), "test": batch(test)}
        meta = ("meta", {b"fine_label_names": [f"class{c}".encode() for c in range(num_classes)]})
    for file, content in [*files.items(), meta]:
        (folder / file).write_bytes(pickle.dumps(content))


def _wnids(num_classes: int) -> list[str]:
    return [f"n{c:08d}" for c in range(num_classes)]


def _save_jpeg(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def _write_tiny(root: Path, train: list[int], test: list[int], rng: np.random.Generator) -> None:
    base, wnids = root / "tiny-imagenet-200", _wnids(200)
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tstand-in {i}\n" for i, w in enumerate(wnids)))
    for i, y in enumerate(train):
        _save_jpeg(base / "train" / wnids[y] / "images" / f"{wnids[y]}_{i}.JPEG", _pixels(rng, y, 200, 64))
    lines = []
    for i, y in enumerate(test):
        _save_jpeg(base / "val" / "images" / f"val_{i}.JPEG", _pixels(rng, y, 200, 64))
        lines.append(f"val_{i}.JPEG\t{wnids[y]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def _write_imagenet(root: Path, train: list[int], test: list[int], rng: np.random.Generator) -> None:
    base, wnids, size = root / "imagenet", _wnids(1000), IMAGENET_FILE_SIZE
    for split, labels in (("train", train), ("val", test)):
        for i, y in enumerate(labels):
            _save_jpeg(base / split / wnids[y] / f"{wnids[y]}_{i}.JPEG", _pixels(rng, y, 1000, size))
    (base / "LOC_synset_mapping.txt").write_text("".join(f"{w} stand-in {i}\n" for i, w in enumerate(wnids)))


def write_standin(
    name: str,
    root: str | Path,
    *,
    per_class: int = 1,
    rich_classes: int = 2,
    rich_per_class: int = 10,
    test_images: int = 20,
    seed: int = 0,
) -> Path:
    """Write stand-in ``name`` (one of :data:`STANDIN_DATASETS`) under ``root`` in its real layout; returns
    ``root``. A folder that already holds it (its marker file) is left as it is."""
    if name not in STANDIN_DATASETS:
        raise ValueError(f"no stand-in for {name!r}; expected one of {STANDIN_DATASETS}")
    if per_class < 1 or rich_per_class < per_class or test_images < 1:
        raise ValueError(
            f"expected per_class >= 1, rich_per_class >= per_class, test_images >= 1; got {per_class}, "
            f"{rich_per_class}, {test_images}"
        )
    root = Path(root)
    marker = root / f".standin-{name}"
    if marker.exists():
        return root
    num_classes = dataset_info(name).num_classes
    train = _labels(_counts(num_classes, per_class, rich_classes, rich_per_class))
    test = [i % max(rich_classes, 1) for i in range(test_images)]
    rng = np.random.default_rng(seed)
    if name in ("cifar10", "cifar100"):
        _write_cifar(name, root, train, test, rng)
    elif name == "tiny-imagenet":
        _write_tiny(root, train, test, rng)
    else:
        _write_imagenet(root, train, test, rng)
    marker.write_text(f"stand-in {name}: random images, not the dataset\n")
    return root

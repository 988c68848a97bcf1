"""Stage 1, data: datasets by name, augmentation (SRe2L-style and DSA), ZCA whitening, the uint8 pixel codec.

``load_dataset(name, split=...)`` is the entry point; see :mod:`dire.data.datasets` for the on-disk layouts.
"""

from dire.data.datasets import (
    DATASETS,
    SPLITS,
    DatasetInfo,
    FileImageDataset,
    ImageDataset,
    SubsetImageDataset,
    TensorImageDataset,
    dataset_info,
    load_dataset,
    read_idx,
    validation_split,
)
from dire.data.pixels import from_uint8, to_uint8

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetInfo",
    "FileImageDataset",
    "ImageDataset",
    "SubsetImageDataset",
    "TensorImageDataset",
    "dataset_info",
    "from_uint8",
    "load_dataset",
    "read_idx",
    "to_uint8",
    "validation_split",
]

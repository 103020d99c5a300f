"""Data sets as uint8 image tensors with train, validation and test splits."""

from optiloss.data.registry import (
    DATASETS,
    default_data_root,
    is_dataset_name,
    load_dataset,
    resolved_image_size,
)
from optiloss.data.splits import ImageSplits, class_mixed_subset, stratified_split

__all__ = [
    "class_mixed_subset",
    "DATASETS",
    "ImageSplits",
    "default_data_root",
    "is_dataset_name",
    "load_dataset",
    "resolved_image_size",
    "stratified_split",
]

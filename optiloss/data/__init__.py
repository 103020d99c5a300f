"""Data sets as uint8 image tensors with train, validation and test splits."""

from optiloss.data.splits import ImageSplits, stratified_split
from optiloss.data.registry import DATASETS, load_dataset

__all__ = ["DATASETS", "ImageSplits", "load_dataset", "stratified_split"]

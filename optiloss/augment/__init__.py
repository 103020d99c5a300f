"""Training augmentations (Kornia, on the data's device) and the corruption suite."""

from optiloss.augment.corruptions import CORRUPTIONS, corrupt, corrupted_copies
from optiloss.augment.pipelines import (
    ALL_AUGMENTATIONS,
    AUGMENTATIONS,
    SOFT_TARGET_AUGMENTATIONS,
    AugmentSettings,
    MixUp,
    TrainingAugmentation,
    build_augmentation,
)

__all__ = ["ALL_AUGMENTATIONS", "AUGMENTATIONS", "AugmentSettings", "CORRUPTIONS", "MixUp",
           "SOFT_TARGET_AUGMENTATIONS", "TrainingAugmentation", "build_augmentation", "corrupt",
           "corrupted_copies"]

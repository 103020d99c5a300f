"""Training augmentations (Kornia, on the data's device) and the corruption suite."""

from optiloss.augment.corruptions import (
    CORRUPTIONS,
    SUITES,
    corrupt,
    corrupted_copies,
    corrupted_suite,
)
from optiloss.augment.pipelines import (
    ALL_AUGMENTATIONS,
    AUGMENTATIONS,
    FLIP_MODES,
    PADDING_MODES,
    SOFT_TARGET_AUGMENTATIONS,
    AugmentSettings,
    MixUp,
    TrainingAugmentation,
    build_augmentation,
    legacy_flip_mode,
)

__all__ = [
    "ALL_AUGMENTATIONS",
    "AUGMENTATIONS",
    "AugmentSettings",
    "CORRUPTIONS",
    "FLIP_MODES",
    "MixUp",
    "PADDING_MODES",
    "SOFT_TARGET_AUGMENTATIONS",
    "TrainingAugmentation",
    "build_augmentation",
    "corrupt",
    "corrupted_copies",
    "corrupted_suite",
    "SUITES",
    "legacy_flip_mode",
]

"""Training augmentations (Kornia, on the data's device) and the corruption suite."""

from optiloss.augment.corruptions import CORRUPTIONS, corrupt, corrupted_copies
from optiloss.augment.pipelines import AUGMENTATIONS, TrainingAugmentation, build_augmentation

__all__ = ["AUGMENTATIONS", "CORRUPTIONS", "TrainingAugmentation", "build_augmentation",
           "corrupt", "corrupted_copies"]

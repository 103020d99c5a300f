"""optiloss: augmentation-aware loss-function search with Optuna's NSGA-II."""

__version__ = "0.1.0"

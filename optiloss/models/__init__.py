"""Models by name."""

from optiloss.models.surrogate import SurrogateCNN, create_model

__all__ = ["SurrogateCNN", "create_model"]

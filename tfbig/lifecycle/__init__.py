"""Model lifecycle: validate versions, label them (stable, canary), roll back, prune.

    from tfbig.lifecycle import ModelRegistry, validate_version
    registry = ModelRegistry("models/digits")
    if validate_version(registry, 3).passed:
        registry.promote(3, "stable", server="localhost:8500")

`tfbig models list|verify|promote|rollback|prune-old|history` is the same from the
command line; see `tfbig.lifecycle.registry` for where labels live.
"""

from tfbig.lifecycle.registry import LifecycleError, ModelRegistry, format_history, format_versions
from tfbig.lifecycle.validate import Validation, validate_version

__all__ = ["LifecycleError", "ModelRegistry", "Validation", "format_history", "format_versions",
           "validate_version"]

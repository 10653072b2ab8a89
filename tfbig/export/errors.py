"""How an export fails: bad input (ExportError, exit 2), or the work itself
failed (ArtifactError: an artifact could not be converted or disagrees with
the model; VersionWriteError: the version could not be written, e.g. on a
full disk; both exit 1). Either way nothing was kept in the model base path.

Both stay ExportErrors too, as callers catch every export failure by that name."""

from tfbig.errors import RunError, UsageError


class ExportError(UsageError, ValueError):
    """The run, the model base path or an option is unusable."""


class ArtifactError(RunError, ExportError):
    """An artifact (ONNX, TFLite) could not be converted or run."""


class ParityError(ArtifactError):
    """A written artifact gave other outputs than the in-memory model."""


class VersionWriteError(RunError, ExportError):
    """The version could not be written (a full disk, no permission)."""

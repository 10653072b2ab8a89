"""How an export fails: bad input (ExportError), or an artifact that could not
be converted or disagrees with the model (ArtifactError). Either way nothing
was kept in the model base path."""


class ExportError(ValueError):
    """The run, the model base path or an option is unusable."""


class ArtifactError(ExportError):
    """An artifact (ONNX, TFLite) could not be converted or run."""


class ParityError(ArtifactError):
    """A written artifact gave other outputs than the in-memory model."""

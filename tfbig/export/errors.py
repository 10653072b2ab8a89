"""The two ways an export fails: bad input, or an artifact that disagrees."""


class ExportError(ValueError):
    """The run, the model base path or an option is unusable; nothing was written."""


class ParityError(ExportError):
    """A written artifact gave other outputs than the in-memory model; nothing was kept."""

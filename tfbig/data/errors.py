"""`DataError`, in a module that imports nothing heavy.

`tfbig data prepare` and its worker processes must start without TensorFlow
(seconds to import, and not fork-safe), yet raise the same error class as the
TensorFlow input pipelines; `tfbig.data.source` re-exports it from here.
"""

from tfbig.errors import UsageError


class DataError(UsageError, ValueError):
    """A data set is missing, malformed or too small for the config."""

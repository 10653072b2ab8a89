"""Data sets with no downloads: text windows, prepared tokens, digits, user arrays, TFRecords.

`load_data(cfg)` returns a `DataSource` (spec + train/eval splits);
`distribute(strategy, split, ...)` turns a split into per-replica batches.
"""

from tfbig.config import DataConfig
from tfbig.data.images import from_arrays, load_digits, load_npz
from tfbig.data.pipeline import distribute
from tfbig.data.records import load_tfrecords, write_tfrecords
from tfbig.data.source import DataError, DataSource, Split
from tfbig.data.spec import DataSpec
from tfbig.data.text import load_text
from tfbig.data.tokens import load_tokens

_LOADERS = {
    "text": load_text,
    "digits": load_digits,
    "npz": load_npz,
    "tfrecord": load_tfrecords,
    "tokens": load_tokens,
}


def load_data(cfg: DataConfig) -> DataSource:
    """The data set named by `cfg.name`."""
    return _LOADERS[cfg.name](cfg)


__all__ = [
    "load_data", "distribute", "from_arrays", "write_tfrecords", "DataError", "DataSource",
    "DataSpec", "Split",
]

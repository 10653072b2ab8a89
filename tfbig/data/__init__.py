"""Data sets with no downloads: text windows, prepared tokens, digits, user arrays, TFRecords.

`load_data(cfg)` returns a `DataSource` (spec + train/eval splits);
`distribute(strategy, split, ...)` turns a split into per-replica batches.

The names below load their modules on first use: the input pipelines need
TensorFlow, but `tfbig.data.prepare` and `tfbig.data.tokenizer` must not pull
it in (they run in fresh worker processes that should start in a blink).
"""

import importlib

_EXPORTS = {
    "from_arrays": "tfbig.data.images",
    "distribute": "tfbig.data.pipeline",
    "input_pipeline": "tfbig.data.pipeline",
    "write_tfrecords": "tfbig.data.records",
    "DataError": "tfbig.data.errors",
    "DataSource": "tfbig.data.source",
    "Split": "tfbig.data.source",
    "DataSpec": "tfbig.data.spec",
}

_LOADERS = {
    "text": ("tfbig.data.text", "load_text"),
    "digits": ("tfbig.data.images", "load_digits"),
    "npz": ("tfbig.data.images", "load_npz"),
    "tfrecord": ("tfbig.data.records", "load_tfrecords"),
    "tokens": ("tfbig.data.tokens", "load_tokens"),
}


def load_data(cfg):
    """The data set named by `cfg.name` (a `tfbig.config.DataConfig`)."""
    module, function = _LOADERS[cfg.name]
    return getattr(importlib.import_module(module), function)(cfg)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tfbig.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = ["load_data", *_EXPORTS]

"""Data sets with no downloads: text windows, prepared tokens, digits, user arrays, TFRecords.

`load_data(cfg)` returns a `DataSource` (spec + train/eval splits);
`distribute(strategy, split, ...)` turns a split into per-replica batches.

The names below load their modules on first use: the input pipelines need
TensorFlow, but `tfbig.data.prepare` and `tfbig.data.tokenizer` must not pull
it in (they run in fresh worker processes that should start in a blink).
"""

import importlib

from tfbig.lazy import lazy_exports

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


__getattr__, _lazy_names = lazy_exports(__name__, {
    "tfbig.data.images": ("from_arrays",),
    "tfbig.data.pipeline": ("distribute", "input_pipeline"),
    "tfbig.data.records": ("write_tfrecords",),
    "tfbig.data.errors": ("DataError",),
    "tfbig.data.source": ("DataSource", "Split"),
    "tfbig.data.spec": ("DataSpec",),
})
__all__ = ["load_data", *_lazy_names]

"""Strategy construction: one factory for every `tf.distribute` kind tfbig supports.

The strategy names load TensorFlow on first use, so `tfbig launch` (which
only starts processes, from `tfbig.distribute.launch`) starts at once.
"""

import importlib

_EXPORTS = {
    "StrategyError": "tfbig.distribute.devices",
    "make_strategy": "tfbig.distribute.strategy",
    "split_cpu": "tfbig.distribute.devices",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tfbig.distribute' has no attribute {name!r}")

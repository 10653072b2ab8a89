"""Strategy construction: one factory for every `tf.distribute` kind tfbig supports.

The strategy names load TensorFlow on first use, so `tfbig launch` (which
only starts processes, from `tfbig.distribute.launch`) starts at once.
"""

from tfbig.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "tfbig.distribute.devices": ("StrategyError", "split_cpu"),
    "tfbig.distribute.strategy": ("make_strategy",),
})

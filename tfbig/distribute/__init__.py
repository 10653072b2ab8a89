"""Strategy construction: one factory for every `tf.distribute` kind tfbig supports.

The strategy names load TensorFlow on first use, so `tfbig launch` (which
only starts processes, from `tfbig.distribute.launch`) starts at once.
"""

__all__ = ["StrategyError", "make_strategy", "split_cpu"]


def __getattr__(name):
    if name in __all__:
        from tfbig.distribute import strategy

        return getattr(strategy, name)
    raise AttributeError(f"module 'tfbig.distribute' has no attribute {name!r}")

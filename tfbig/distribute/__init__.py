"""Strategy construction: one factory for every `tf.distribute` kind tfbig supports."""

from tfbig.distribute.strategy import StrategyError, make_strategy, split_cpu

__all__ = ["StrategyError", "make_strategy", "split_cpu"]

"""What every strategy builder shares: its error type, and splitting the CPU into devices.

A leaf of `tfbig.distribute`: the strategy factory (`strategy`) and the DTensor
mesh (`mesh`) both build on it, and it imports neither.
"""

from __future__ import annotations

import tensorflow as tf

from tfbig.errors import RunError


class StrategyError(RunError, RuntimeError):
    """The requested strategy cannot be built on this machine or process."""


def split_cpu(count: int) -> list[str]:
    """Names of `count` logical CPU devices, creating them if TF allows it still.

    TensorFlow fixes the logical device layout when the runtime starts (the
    first op). Before that we split the CPU as asked; after it, an existing
    split with at least `count` devices is reused, anything else is an error
    that says how to get the layout right.
    """
    physical = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(physical)
    if not configured or len(configured) < count:
        try:
            tf.config.set_logical_device_configuration(
                physical, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
            )
        except RuntimeError:
            have = len(tf.config.list_logical_devices("CPU"))
            raise StrategyError(
                f"mirrored on CPU needs {count} logical CPU devices, but TensorFlow is "
                f"already initialized with {have}. Call "
                f"tfbig.distribute.split_cpu({count}) before running any TensorFlow op, "
                f"or start a fresh process."
            ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")[:count]]

"""The Keras dtype policy a model is built under (float32, mixed_bfloat16, ...)."""

from __future__ import annotations

import contextlib

import tf_keras as keras


@contextlib.contextmanager
def precision_policy(name: str):
    """Set Keras's global dtype policy for the duration of a build or run.

    The policy must be in force while layers are built; restoring it after
    keeps one run from changing the dtype of models built later in-process
    (a training run, then an export, then a test).
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)

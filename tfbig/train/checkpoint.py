"""Checkpoints that make a resumed run continue exactly where it stopped.

A checkpoint holds the model, the optimizer (slots, iteration count, loss
scale), the step counter, the early-stopping state and the dropout random
generators. Keras deliberately leaves those generators out of checkpoints, so
without them a resumed run would draw different dropout masks; we add them
explicitly. The data position needs no state: the input pipeline is a pure
function of (seed, step), see `tfbig.data.distribute(skip_steps=...)`.

TensorFlow writes checkpoint data under temporary names and replaces the
`checkpoint` index file atomically, so a crash mid-save leaves the previous
checkpoint as the latest one.
"""

from __future__ import annotations

import os

import tensorflow as tf


def dropout_generators(model) -> list[tf.random.Generator]:
    """The `tf.random.Generator` of every random layer in `model`, in a fixed order.

    Relies on tf_keras's `BaseRandomLayer._random_generator._generator`, which
    exists once `enable_tf_random_generator()` is on (tfbig.models does that).
    """
    generators = []
    for layer in model.submodules:
        generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if isinstance(generator, tf.random.Generator):
            generators.append(generator)
    return generators


class Checkpointer:
    """A `tf.train.CheckpointManager` over everything a run's state consists of."""

    def __init__(self, directory: str, *, keep: int, **state):
        self.directory = directory
        self._checkpoint = tf.train.Checkpoint(**state)
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, directory, max_to_keep=keep, checkpoint_name="ckpt"
        )

    @property
    def latest(self) -> str | None:
        return self._manager.latest_checkpoint

    def restore_latest(self) -> str | None:
        """Restore the newest checkpoint, if any; returns its path."""
        path = self._manager.latest_checkpoint
        if path:
            # assert_existing_objects_matched: every variable we hold must be
            # in the checkpoint, so a changed model fails here, loudly.
            self._checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self, step: int) -> str:
        os.makedirs(self.directory, exist_ok=True)
        return self._manager.save(checkpoint_number=step)

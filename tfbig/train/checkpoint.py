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
import warnings

import tensorflow as tf

from tfbig.errors import RunError


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
    """A `tf.train.CheckpointManager` over everything a run's state consists of.

    `write_directory` separates where checkpoints are read from where they are
    written: in a multi-worker run every worker takes part in a save (reading
    mirrored variables is a collective) but only the chief writes the run's
    directory; the other workers restore from it and save into scratch space.
    """

    def __init__(self, directory: str, *, keep: int, write_directory: str | None = None,
                 **state):
        self.directory = directory
        self._checkpoint = tf.train.Checkpoint(**state)
        self.manager = tf.train.CheckpointManager(
            self._checkpoint, write_directory or directory, max_to_keep=keep,
            checkpoint_name="ckpt",
        )

    @property
    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(self.directory)

    def restore_latest(self) -> str | None:
        """Restore the newest readable checkpoint, if any; returns its path.

        A checkpoint whose files are truncated or missing (a disk filled up, a
        copy cut short) is skipped with a warning for the one before it, so a
        run resumes from the last good state instead of failing to start.
        """
        state = tf.train.get_checkpoint_state(self.directory)
        candidates = list(reversed(state.all_model_checkpoint_paths)) if state else []
        for path in candidates:
            try:
                self.restore(path)
                return path
            # Truncated data files raise IndexError ("Read less bytes than
            # requested") from TF's reader; missing or corrupt ones OpErrors.
            except (tf.errors.OpError, IndexError) as error:
                first_line = str(error).strip().splitlines()[0]
                warnings.warn(
                    f"checkpoint {path} is unreadable ({type(error).__name__}: "
                    f"{first_line}); falling back to the previous one",
                    stacklevel=2,
                )
        if candidates:
            raise CheckpointError(
                f"no readable checkpoint in {self.directory}: all of "
                f"{', '.join(os.path.basename(p) for p in candidates)} are damaged. "
                f"Move the directory away to train from scratch."
            )
        return None

    def restore(self, path: str) -> None:
        # assert_existing_objects_matched: every variable we hold must be in
        # the checkpoint, so a changed model fails here, loudly.
        self._checkpoint.restore(path).assert_existing_objects_matched()

    def save(self, step: int) -> str:
        os.makedirs(self.manager.directory, exist_ok=True)
        return self.manager.save(checkpoint_number=step)


class CheckpointError(RunError, RuntimeError):
    """No checkpoint of a run can be restored."""

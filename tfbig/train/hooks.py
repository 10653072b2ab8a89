"""Extension points of the Trainer's inner loop, for what compression adds to training.

Compression methods need to act *inside* the compiled loop, where Keras
callbacks cannot reach: pruning advances each wrapper's step counter before
every optimizer step (TF-MOT's `UpdatePruningStep`, which only `model.fit`
calls), distillation replaces the loss, and both want their own figures in the
run log (TF-MOT's `PruningSummaries`). A `TrainingHooks` subclass overrides
only what it needs; the defaults change nothing.
"""

from __future__ import annotations

import tensorflow as tf


class TrainingHooks:
    def before_step(self, step: tf.Tensor) -> None:
        """Called in the compiled loop, in cross-replica context, before step `step` (int64).

        Runs once per optimizer step, not once per replica, so variables it
        assigns are updated on every replica alike.
        """
        del step  # nothing to do by default

    def per_example_loss(self, inputs, targets, logits) -> tf.Tensor | None:
        """The loss per example on one replica, or None for the task's default loss."""
        return None

    def log_metrics(self) -> dict[str, float]:
        """Extra figures written with every training log record (eagerly, between chunks)."""
        return {}

"""Per-example loss and accuracy for the two tasks tfbig trains.

Returning per-example values (not a batch mean) lets the Trainer scale by the
*global* batch size, which is what makes N replicas of b/N examples, or k
accumulated micro-batches of b/k, give exactly the update of one batch of b.
"""

from __future__ import annotations

import tensorflow as tf


def per_example_loss(task: str, targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Cross-entropy per example; for `lm`, the mean over the example's tokens."""
    logits = tf.cast(logits, tf.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(targets, tf.int32), logits=logits
    )
    return tf.reduce_mean(ce, axis=-1) if task == "lm" else ce


def per_example_accuracy(task: str, targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """1.0 for a right top-1 prediction; for `lm`, the fraction of right tokens."""
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    right = tf.cast(tf.equal(predicted, tf.cast(targets, tf.int32)), tf.float32)
    return tf.reduce_mean(right, axis=-1) if task == "lm" else right

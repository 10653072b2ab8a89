"""Loading a SavedModel in this process, whatever ops its signatures use.

A language model's `generate` signature runs its SentencePiece tokenizer with
TensorFlow Text's ops, which `tensorflow_model_server` links in but plain
TensorFlow does not register until `tensorflow_text` is imported. Every place
tfbig loads a SavedModel (export's check, the embedded server, compression)
loads it through here, so none of them fails on such a model.
"""

from __future__ import annotations

import tensorflow as tf


def load(path: str, tags=None):
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops)

    return tf.saved_model.load(path, tags=tags)

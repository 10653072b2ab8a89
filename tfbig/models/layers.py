"""The two layers Keras 2 lacks for a GPT, kept minimal and serializable.

Learned positions need position indices, and tied embeddings need the token
embedding matrix as the output projection; built from stock layers both would
need raw TF ops on Keras tensors, which become TFOpLambda layers that TF-MOT
pruning and QAT reject. Both layers are registered, so
`tf_keras.models.load_model` works after `import tfbig`, and a SavedModel
loads with `tf.saved_model.load` without any tfbig code at all.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.saving.register_keras_serializable(package="tfbig")
class PositionEmbedding(keras.layers.Layer):
    """Learned position vectors for the first `seq_len` positions of the input.

    Returns only the position vectors (broadcast over the batch); the model
    adds them to the token embeddings with `layers.Add`.
    """

    def __init__(self, max_len: int, **kwargs):
        super().__init__(**kwargs)
        self.max_len = max_len

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            "embeddings", shape=(self.max_len, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        super().build(input_shape)

    def call(self, inputs):
        positions = tf.cast(self.embeddings[: tf.shape(inputs)[1]], self.compute_dtype)
        # broadcast_to adds the batch axis itself; an explicit `[None]` (a
        # strided slice with new_axis_mask) segfaults DTensor (TF 2.21).
        return tf.broadcast_to(positions, tf.shape(inputs))

    def get_config(self):
        return {**super().get_config(), "max_len": self.max_len}


@keras.saving.register_keras_serializable(package="tfbig")
class ReversibleEmbedding(keras.layers.Embedding):
    """An Embedding that, called with `reverse=True`, projects back to the vocabulary.

    Calling the same layer twice shares one matrix between the input
    embedding and the output head (tied embeddings, as in GPT-2), which saves
    vocab_size x d_model parameters.
    """

    def call(self, inputs, reverse: bool = False):
        if not reverse:
            return super().call(inputs)
        kernel = tf.cast(self.embeddings, self.compute_dtype)
        return tf.matmul(inputs, kernel, transpose_b=True)

    def compute_output_shape(self, input_shape, reverse: bool = False):
        if reverse:
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)

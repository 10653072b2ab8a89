"""The pre-LayerNorm transformer block shared by the encoder and the GPT,
and the transformer_encoder classifier.

Pre-LN (normalise before attention/MLP, residual around each) trains stably
without learning-rate warmup tricks and is what GPT-2 and most large models use.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

from tfbig.config import ConfigError, TransformerEncoderConfig
from tfbig.data.spec import DataSpec
from tfbig.models.layers import PositionEmbedding

# Byte tokens: integer inputs to sequence classifiers are taken as UTF-8 bytes,
# the same vocabulary tfbig's text pipeline produces.
TOKEN_VOCAB = 256


def feed_forward_dim(d_model: int, d_ff: int) -> int:
    return d_ff or 4 * d_model


def transformer_block(x, *, d_model: int, num_heads: int, d_ff: int, dropout: float,
                      causal: bool, epsilon: float, name: str):
    """x -> x + Attention(LN(x)) -> (.) + MLP(LN(.)), all Keras layers."""
    h = layers.LayerNormalization(epsilon=epsilon, name=f"{name}_ln1")(x)
    h = layers.MultiHeadAttention(
        num_heads, key_dim=d_model // num_heads, dropout=dropout, name=f"{name}_attention",
    )(h, h, use_causal_mask=causal)
    h = layers.Dropout(dropout, name=f"{name}_attention_dropout")(h)
    x = layers.Add(name=f"{name}_attention_residual")([x, h])
    h = layers.LayerNormalization(epsilon=epsilon, name=f"{name}_ln2")(x)
    h = layers.Dense(feed_forward_dim(d_model, d_ff), activation="gelu", name=f"{name}_mlp_in")(h)
    h = layers.Dense(d_model, name=f"{name}_mlp_out")(h)
    h = layers.Dropout(dropout, name=f"{name}_mlp_dropout")(h)
    return layers.Add(name=f"{name}_mlp_residual")([x, h])


@keras.saving.register_keras_serializable(package="tfbig")
class RecomputedBlock(keras.layers.Layer):
    """`transformer_block` as one layer whose activations are recomputed in backprop.

    `tf.recompute_grad` needs the block as one callable, which a functional
    sub-graph is not. Sublayers are built in `build` (in the functional
    block's order, so `weights` line up with it): variables must not be
    created inside the recomputed function. Dropout would draw new masks when
    recomputed, so the block refuses it.
    """

    def __init__(self, *, d_model: int, num_heads: int, d_ff: int, causal: bool,
                 epsilon: float, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.d_ff = d_model, num_heads, d_ff
        self.causal, self.epsilon = causal, epsilon
        self.ln1 = layers.LayerNormalization(epsilon=epsilon, name="ln1")
        self.attention = layers.MultiHeadAttention(
            num_heads, key_dim=d_model // num_heads, name="attention")
        self.ln2 = layers.LayerNormalization(epsilon=epsilon, name="ln2")
        self.mlp_in = layers.Dense(feed_forward_dim(d_model, d_ff), activation="gelu",
                                   name="mlp_in")
        self.mlp_out = layers.Dense(d_model, name="mlp_out")

    def build(self, input_shape):
        self.ln1.build(input_shape)
        self.attention._build_from_signature(input_shape, input_shape)
        self.ln2.build(input_shape)
        self.mlp_in.build(input_shape)
        self.mlp_out.build(input_shape[:-1] + (self.mlp_in.units,))
        super().build(input_shape)

    def call(self, x):
        return tf.recompute_grad(self._forward)(x)

    def _forward(self, x):
        h = self.ln1(x)
        x = x + self.attention(h, h, use_causal_mask=self.causal)
        return x + self.mlp_out(self.mlp_in(self.ln2(x)))

    def get_config(self):
        return {**super().get_config(), "d_model": self.d_model, "num_heads": self.num_heads,
                "d_ff": self.d_ff, "causal": self.causal, "epsilon": self.epsilon}


def embed_with_positions(x, embedding: layers.Layer, max_len: int, dropout: float):
    """Token (or feature) embedding plus learned positions, then dropout."""
    h = embedding(x)
    positions = PositionEmbedding(max_len, name="position_embedding")(h)
    h = layers.Add(name="embeddings")([h, positions])
    return layers.Dropout(dropout, name="embedding_dropout")(h)


def build_transformer_encoder(cfg: TransformerEncoderConfig, spec: DataSpec,
                              inputs) -> keras.layers.Layer:
    if len(spec.input_shape) == 1 and spec.input_dtype == "int32":
        embedding = layers.Embedding(TOKEN_VOCAB, cfg.d_model, name="token_embedding")
    elif len(spec.input_shape) == 2:
        embedding = layers.Dense(cfg.d_model, name="feature_projection")
    else:
        raise ConfigError(
            f"transformer_encoder takes token ids (seq_len,) or feature sequences "
            f"(timesteps, features); got inputs of shape {spec.input_shape}"
        )
    if spec.input_shape[0] > cfg.max_len:
        raise ConfigError(f"model.max_len={cfg.max_len} is shorter than the inputs "
                         f"({spec.input_shape[0]} positions); raise model.max_len")
    h = embed_with_positions(inputs, embedding, cfg.max_len, cfg.dropout)
    for i in range(cfg.num_layers):
        h = transformer_block(h, d_model=cfg.d_model, num_heads=cfg.num_heads, d_ff=cfg.d_ff,
                              dropout=cfg.dropout, causal=False, epsilon=1e-5, name=f"block{i}")
    h = layers.LayerNormalization(epsilon=1e-5, name="final_ln")(h)
    return layers.GlobalAveragePooling1D(name="pool")(h)

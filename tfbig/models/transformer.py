"""The pre-LayerNorm transformer block shared by the encoder and the GPT,
and the transformer_encoder classifier.

Pre-LN (normalise before attention/MLP, residual around each) trains stably
without learning-rate warmup tricks and is what GPT-2 and most large models use.
"""

from __future__ import annotations

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

"""Stacked-LSTM sequence classifier.

Integer inputs (seq_len,) are byte token ids and go through an Embedding;
float inputs (timesteps, features) go to the LSTM as they are.
"""

from __future__ import annotations

from tf_keras import layers

from tfbig.config import ConfigError, LSTMConfig
from tfbig.data.spec import DataSpec
from tfbig.models.transformer import TOKEN_VOCAB


def build_lstm(cfg: LSTMConfig, spec: DataSpec, inputs):
    if len(spec.input_shape) == 1 and spec.input_dtype == "int32":
        h = layers.Embedding(TOKEN_VOCAB, cfg.embedding_dim, name="token_embedding")(inputs)
    elif len(spec.input_shape) == 2:
        h = inputs
    else:
        raise ConfigError(f"lstm takes token ids (seq_len,) or feature sequences "
                         f"(timesteps, features); got inputs of shape {spec.input_shape}")
    for i in range(cfg.num_layers):
        lstm = layers.LSTM(cfg.units, return_sequences=i < cfg.num_layers - 1, name=f"lstm{i}")
        if cfg.bidirectional:
            lstm = layers.Bidirectional(lstm, name=f"bidirectional{i}")
        h = lstm(h)
        h = layers.Dropout(cfg.dropout, name=f"dropout{i}")(h)
    return h

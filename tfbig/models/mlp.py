"""Multi-layer perceptron over flattened inputs."""

from __future__ import annotations

from tf_keras import layers

from tfbig.config import MLPConfig
from tfbig.data.spec import DataSpec


def build_mlp(cfg: MLPConfig, spec: DataSpec, inputs):
    h = layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(cfg.hidden_units):
        h = layers.Dense(units, activation=cfg.activation, name=f"dense{i}")(h)
        h = layers.Dropout(cfg.dropout, name=f"dropout{i}")(h)
    return h

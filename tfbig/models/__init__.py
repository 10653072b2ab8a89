"""Keras model builders by name, and their analytic size/FLOPs/memory."""

from tfbig.keras2 import require_keras_2

require_keras_2()  # before tf_keras models are made; see tfbig.keras2

from tfbig.models.layers import PositionEmbedding, ReversibleEmbedding  # noqa: E402
from tfbig.models.precision import precision_policy  # noqa: E402
from tfbig.models.registry import MODEL_NAMES, build_model  # noqa: E402
from tfbig.models.stats import format_stats, model_stats  # noqa: E402

__all__ = ["MODEL_NAMES", "PositionEmbedding", "ReversibleEmbedding", "build_model",
           "format_stats", "model_stats", "precision_policy"]

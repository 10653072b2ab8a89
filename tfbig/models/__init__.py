"""Keras model builders by name, and their analytic size/FLOPs/memory."""

from tfbig.models.layers import PositionEmbedding, ReversibleEmbedding
from tfbig.models.precision import precision_policy
from tfbig.models.registry import MODEL_NAMES, build_model
from tfbig.models.stats import format_stats, model_stats

__all__ = ["MODEL_NAMES", "PositionEmbedding", "ReversibleEmbedding", "build_model",
           "format_stats", "model_stats", "precision_policy"]

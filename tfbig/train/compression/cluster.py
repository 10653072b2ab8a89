"""Weight clustering (TF-MOT `tfmot.clustering.keras`): few distinct values per kernel.

Each selected kernel is replaced during fine-tuning by `clusters` shared
centroids plus an index per weight; after `strip_clustering` it is a plain
kernel with only that many distinct values, which gzip (and any
palettizing runtime) stores in about log2(clusters) bits per weight.

Layers are chosen by the same rule as pruning (`tfbig.train.compression.prune`):
Dense, Conv and attention kernels the TF-MOT registry knows, embeddings left
as they are. `preserve_sparsity` keeps a pruned model's zeros at zero
(sparsity-preserving clustering), so prune -> cluster compounds.
"""

from __future__ import annotations

import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import (
    ClusteringRegistry,
)

from tfbig.train.compression.method import Method, wrap_selected
from tfbig.train.compression.prune import DENSE_BY_RULE
from tfbig.config import ClusterConfig

CentroidInitialization = tfmot.clustering.keras.CentroidInitialization


class ClusterMethod(Method):
    def __init__(self, cfg: ClusterConfig):
        self.cfg = cfg
        self.clustered: list[str] = []
        self.left_unclustered: dict[str, str] = {}

    @staticmethod
    def keep_reason(layer: keras.layers.Layer) -> str | None:
        if isinstance(layer, DENSE_BY_RULE):
            return "embedding: left as is by rule"
        if not ClusteringRegistry.supports(layer):
            return f"{type(layer).__name__}: not clusterable in TF-MOT"
        if not ClusteringRegistry.make_clusterable(layer).get_clusterable_weights():
            return "no clusterable weights"
        return None

    def wrap(self, model: keras.Model) -> keras.Model:
        init = CentroidInitialization[self.cfg.init.upper()]
        wrapped, self.clustered, self.left_unclustered = wrap_selected(
            model, pattern=self.cfg.layers, key="compress.cluster.layers", what="clustered",
            keep_reason=self.keep_reason,
            wrap_layer=lambda layer: tfmot.clustering.keras.cluster_weights(
                layer, number_of_clusters=self.cfg.clusters, cluster_centroids_init=init,
                preserve_sparsity=self.cfg.preserve_sparsity))
        return wrapped

    def finalize(self, model: keras.Model) -> keras.Model:
        return tfmot.clustering.keras.strip_clustering(model)

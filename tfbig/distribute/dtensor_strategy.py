"""`distribute.strategy=dtensor`: a `tf.distribute.Strategy` over a `batch` x
`model` DTensor mesh, so the Trainer runs tensor-parallel training unchanged.

TensorFlow's DTensor-backed strategy
(`tensorflow.python.distribute.experimental.MirroredStrategy(mesh=...)`)
accepts only a 1-D mesh. We reuse its machinery, `DTensorStrategyExtended`
(variables become DVariables, datasets `DTensorDataset`s split along `batch`,
`run` calls the step once on global DTensors), and change what a `model` axis
and tfbig's Trainer need:

- `num_replicas_in_sync` is the size of the `batch` axis, the number of
  slices the global batch is split into; devices along `model` share a slice.
- A variable created for another (`colocate_with`, as Keras optimizers create
  their slots) takes that variable's layout, so Adam's moments are sharded
  like the weights instead of replicated in full.
- The step sees global values: the gradient of the loss over the global
  batch is already what an all-reduce of per-replica gradients gives (DTensor
  inserts the collectives), so the replica context's `all_reduce` is the
  identity and variable updates apply directly.
"""

from __future__ import annotations

import functools

import tensorflow as tf
from tensorflow.experimental import dtensor
from tensorflow.python.distribute import distribute_lib
from tensorflow.python.distribute.experimental import dtensor_strategy_extended, dtensor_util
from tensorflow.python.util import nest

from tfbig.config import DistributeConfig
from tfbig.distribute.mesh import BATCH, make_mesh


class MeshStrategy(distribute_lib.Strategy):
    """Data parallel along the mesh's `batch` axis, tensor parallel along `model`.

    Build the model inside `scope()` and its layout scope (the GPT's:
    `tfbig.models.gpt_layout`), which shards its weights; every other
    variable created in `scope()` is replicated.
    """

    def __init__(self, mesh: dtensor.Mesh):
        super().__init__(_MeshExtended(self, mesh))
        # tf_keras runs optimizers and metrics in DTensor mode when the
        # strategy has a `_mesh` (tf_keras.src.dtensor.utils).
        self._mesh = mesh

    @property
    def mesh(self) -> dtensor.Mesh:
        return self._mesh


def make_mesh_strategy(cfg: DistributeConfig) -> MeshStrategy:
    return MeshStrategy(make_mesh(cfg.mesh))


class _MeshExtended(dtensor_strategy_extended.DTensorStrategyExtended):

    @property
    def _num_replicas_in_sync(self):
        return self._mesh.dim_size(BATCH)

    @property
    def should_checkpoint(self):
        return dtensor.client_id() == 0

    @property
    def should_save_summary(self):
        return dtensor.client_id() == 0

    def _create_variable(self, next_creator, **kwargs):
        reference = kwargs.get("colocate_with")
        if reference is None or not dtensor.is_dtensor(reference):
            return super()._create_variable(next_creator, **kwargs)
        layout = dtensor.fetch_layout(reference)
        initial_value = kwargs.pop("initial_value")
        for unused in ("use_resource", "colocate_with", "expected_shape"):
            kwargs.pop(unused, None)
        value = initial_value() if callable(initial_value) else initial_value
        value = tf.convert_to_tensor(value, dtype=kwargs.get("dtype"))
        value = dtensor.copy_to_mesh(value, dtensor.Layout.replicated(self._mesh, value.shape.rank))
        return dtensor.DVariable(dtensor.relayout(value, layout), **kwargs)

    def _update(self, var, fn, args, kwargs, group):
        # One global variable, one update; DTensor applies it on every device.
        del group
        return fn(var, *args, **(kwargs or {}))

    def _replica_ctx_update(self, var, fn, args=(), kwargs=None, group=True):
        return self._update(var, fn, args, kwargs, group)

    def call_for_each_replica(self, fn, args=(), kwargs=None):
        # DTensorStrategyExtended's, with a replica context that accepts the
        # cross-replica calls tfbig's Trainer makes.
        distribute_lib._require_cross_replica_or_default_context_extended(self)
        to_dtensor = functools.partial(dtensor_util.convert_inputs_to_dtensor, mesh=self._mesh)
        args = nest.map_structure(to_dtensor, args)
        kwargs = nest.map_structure(to_dtensor, kwargs or {})
        with self._container_strategy().scope():
            with _GlobalReplicaContext(self._container_strategy()):
                result = fn(*args, **kwargs)
        return nest.map_structure(dtensor_util.DTensorDistributedValue, result)


class _GlobalReplicaContext(dtensor_util.DTensorReplicaContext):
    """The one replica context of a DTensor step, which sees global values."""

    def all_reduce(self, reduce_op, value, options=None):
        del reduce_op, options  # The one global replica's value is the reduction.
        # Dense: a sparse update (ResourceScatterAdd, for an embedding's
        # IndexedSlices gradient) has no DTensor layout propagation.
        return nest.map_structure(tf.convert_to_tensor, value)

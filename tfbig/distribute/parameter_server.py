"""ParameterServerStrategy: the chief coordinates, workers compute, ps tasks hold variables.

Every task runs the same `tfbig train CONFIG` (as `tfbig launch --ps M` starts
it); TF_CONFIG decides its part. The chief builds the strategy and trains
through a ClusterCoordinator; worker and ps tasks only serve the cluster
until they are stopped; an evaluator task evaluates each new checkpoint
(see `tfbig.train.sidecar`).
"""

from __future__ import annotations

import tensorflow as tf

from tfbig.config import DistributeConfig

SERVING_TASKS = ("worker", "ps")


def make_parameter_server_strategy(
    cfg: DistributeConfig, resolver: tf.distribute.cluster_resolver.ClusterResolver,
) -> tf.distribute.experimental.ParameterServerStrategy:
    """The coordinator's strategy; large variables are split over the ps tasks."""
    num_ps = len(resolver.cluster_spec().as_dict().get("ps", []))
    return tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=variable_partitioner(cfg, num_ps),
    )


def variable_partitioner(cfg: DistributeConfig, num_ps: int):
    """Fixed shards when asked for, else shards of at least `min_shard_bytes`.

    Splitting a variable over ps tasks spreads its memory and the update
    traffic; splitting a small one only adds round trips, hence the floor.
    """
    if cfg.variable_shards:
        return tf.distribute.experimental.partitioners.FixedShardsPartitioner(
            cfg.variable_shards)
    return tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=cfg.min_shard_bytes, max_shards=max(num_ps, 1))


def serve_cluster_task(resolver: tf.distribute.cluster_resolver.ClusterResolver) -> None:
    """Run this worker or ps task's server until the process is stopped.

    Each server gets inter-op threads for every worker plus one: with fewer,
    concurrent worker requests can take every thread while each waits on
    another, which deadlocks on small (2-core) machines.
    """
    spec = resolver.cluster_spec()
    workers = len(spec.as_dict().get("worker", []))
    server = tf.distribute.Server(
        spec, job_name=resolver.task_type, task_index=resolver.task_id, protocol="grpc",
        config=tf.compat.v1.ConfigProto(inter_op_parallelism_threads=workers + 1),
        start=True,
    )
    server.join()

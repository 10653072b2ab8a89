"""The tf.data pipelines and their distribution over replicas.

Index pipeline: `range(n) -> shuffle(n, seed) -> repeat -> skip -> (this
worker's slice of each step) -> batch -> gather -> prefetch`. Shuffling
indices, not examples, makes a full-size shuffle buffer cheap (8 bytes an
example), and skipping indices is cheap too, so resuming at step s costs
microseconds, not a pass over the data.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf


def index_pipeline(num_examples: int, gather: Callable[[tf.Tensor], tuple], *,
                   batch_size: int, shuffle: bool, seed: int, repeat: bool,
                   skip_examples: int = 0, drop_remainder: bool = True,
                   input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Batches of `batch_size` examples (one replica's share of a step).

    Every input pipeline (one per worker) walks the same seeded global order
    and keeps its replicas' slices of each step, so a step trains on the same
    examples whether they are spread over one process or several workers: a
    multi-worker run reproduces the single-process run with the same global
    batch. `skip_examples` counts this pipeline's examples.
    """
    pipelines = input_context.num_input_pipelines if input_context else 1
    indices = tf.data.Dataset.range(num_examples)
    if shuffle:
        indices = indices.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        indices = indices.repeat()
    if skip_examples:
        indices = indices.skip(skip_examples * pipelines)
    if pipelines > 1:
        local = batch_size * (input_context.num_replicas_in_sync // pipelines)
        indices = indices.batch(local).shard(pipelines, input_context.input_pipeline_id) \
            .unbatch()
    batches = indices.batch(batch_size, drop_remainder=drop_remainder)
    # Gathering a whole batch of indices at once is one vectorised op per batch.
    return batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
        .prefetch(tf.data.AUTOTUNE)


def shard(dataset: tf.data.Dataset, input_context) -> tf.data.Dataset:
    """This input pipeline's share of `dataset` (every n-th element)."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return dataset
    return dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def input_pipeline(split, context: tf.distribute.InputContext, *, global_batch_size: int,
                   shuffle: bool, seed: int, repeat: bool, skip_steps: int = 0,
                   drop_remainder: bool = True, service=None) -> tf.data.Dataset:
    """One input pipeline's per-replica batches of `split`, after `skip_steps` steps.

    In-process, the pipeline reads its own share of the data (`context` picks
    it) and skips what its replicas consumed. Through a tf.data service
    (`service`, a `tfbig.data.service.DataService`) every pipeline defines
    the whole split and reads from one job they share, which hands each batch
    to one reader; the skip then counts what every replica consumed.
    """
    per_replica = context.get_per_replica_batch_size(global_batch_size)
    if service is None:
        share, readers = context, context.num_replicas_in_sync // context.num_input_pipelines
    else:
        share, readers = None, context.num_replicas_in_sync
    dataset = split.make_dataset(
        batch_size=per_replica, shuffle=shuffle, seed=seed, repeat=repeat,
        skip_examples=skip_steps * per_replica * readers, drop_remainder=drop_remainder,
        input_context=share,
    )
    return dataset if service is None else service.distribute(dataset)


def distribute(strategy: tf.distribute.Strategy, split, *, global_batch_size: int,
               shuffle: bool, seed: int, repeat: bool, skip_steps: int = 0,
               drop_remainder: bool = True, service=None) -> tf.distribute.DistributedDataset:
    """`split` as per-replica batches of `global_batch_size / replicas`.

    Each input pipeline (one per worker) builds its own dataset from the
    strategy's InputContext, so workers read disjoint shards (or, with
    `service`, disjoint batches of one shared tf.data service job). `skip_steps`
    skips what that many steps consumed, which is how a run resumes its data.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"batch size {global_batch_size} cannot be split evenly over {replicas} "
            f"replicas; use a multiple of {replicas}"
        )
    return strategy.distribute_datasets_from_function(lambda context: input_pipeline(
        split, context, global_batch_size=global_batch_size, shuffle=shuffle, seed=seed,
        repeat=repeat, skip_steps=skip_steps, drop_remainder=drop_remainder, service=service))

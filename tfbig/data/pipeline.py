"""The tf.data pipelines and their distribution over replicas.

Index pipeline: `range(n) -> shard -> shuffle(n, seed) -> repeat -> skip ->
batch -> gather -> prefetch`. Shuffling indices, not examples, makes a
full-size shuffle buffer cheap (8 bytes an example), and skipping indices is
cheap too, so resuming at step s costs microseconds, not a pass over the data.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf


def index_pipeline(num_examples: int, gather: Callable[[tf.Tensor], tuple], *,
                   batch_size: int, shuffle: bool, seed: int, repeat: bool,
                   skip_examples: int = 0, drop_remainder: bool = True,
                   input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    indices = tf.data.Dataset.range(num_examples)
    indices = shard(indices, input_context)
    if shuffle:
        indices = indices.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        indices = indices.repeat()
    if skip_examples:
        indices = indices.skip(skip_examples)
    batches = indices.batch(batch_size, drop_remainder=drop_remainder)
    # Gathering a whole batch of indices at once is one vectorised op per batch.
    return batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
        .prefetch(tf.data.AUTOTUNE)


def shard(dataset: tf.data.Dataset, input_context) -> tf.data.Dataset:
    """This input pipeline's share of `dataset` (every n-th element)."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return dataset
    return dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def distribute(strategy: tf.distribute.Strategy, split, *, global_batch_size: int,
               shuffle: bool, seed: int, repeat: bool, skip_steps: int = 0,
               drop_remainder: bool = True) -> tf.distribute.DistributedDataset:
    """`split` as per-replica batches of `global_batch_size / replicas`.

    Each input pipeline (one per worker) builds its own dataset from the
    strategy's InputContext, so workers read disjoint shards. `skip_steps`
    skips what that many steps consumed, which is how a run resumes its data.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"batch size {global_batch_size} cannot be split evenly over {replicas} "
            f"replicas; use a multiple of {replicas}"
        )

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(global_batch_size)
        replicas_here = context.num_replicas_in_sync // context.num_input_pipelines
        return split.make_dataset(
            batch_size=per_replica, shuffle=shuffle, seed=seed, repeat=repeat,
            skip_examples=skip_steps * per_replica * replicas_here,
            drop_remainder=drop_remainder, input_context=context,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)

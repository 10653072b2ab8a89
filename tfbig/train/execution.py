"""Where the Trainer's compiled functions run: here, or on a cluster's workers.

Under every strategy but one, each process runs the training function itself
(its replicas are local devices, or peers that run the same program, as in
MultiWorkerMirroredStrategy). Under ParameterServerStrategy the chief is a
coordinator: it schedules chunks of steps onto whichever worker is free,
through `ClusterCoordinator`, which also re-runs a chunk whose worker died.
The Trainer talks to one of these two classes and stays the same otherwise.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tfbig import data as tfdata
from tfbig.distribute.dtensor_strategy import MeshStrategy


class LocalExecution:
    """This process runs every step (with its peers, in a multi-worker run)."""

    def __init__(self, strategy: tf.distribute.Strategy):
        self.strategy = strategy
        # DTensor's input pipeline takes only batches of one static size, so
        # under distribute.strategy=dtensor eval leaves out a last partial batch.
        self._partial_eval_batch = not isinstance(strategy, MeshStrategy)

    def train_iterator(self, split, *, global_batch_size: int, seed: int, skip_steps: int,
                       service=None):
        return iter(tfdata.distribute(
            self.strategy, split, global_batch_size=global_batch_size, shuffle=True,
            seed=seed, repeat=True, skip_steps=skip_steps, service=service,
        ))

    def run_steps(self, train_steps: Callable, iterator, steps: int) -> None:
        train_steps(iterator, tf.constant(steps, tf.int64))

    def eval_iterator(self, split, *, global_batch_size: int, seed: int):
        return iter(tfdata.distribute(
            self.strategy, split, global_batch_size=global_batch_size, shuffle=False,
            seed=seed, repeat=False, drop_remainder=not self._partial_eval_batch,
        ))

    def run_replicas(self, fn: Callable, batch) -> None:
        self.strategy.run(fn, args=(batch,))


class CoordinatedExecution:
    """The chief schedules steps onto parameter-server workers.

    Training is asynchronous: each worker applies its own batch's update, so a
    "step" is one worker's batch and the steps of a chunk run on several
    workers at once. Evaluation runs on the coordinator itself (it reads the
    variables from the ps tasks), so its result does not depend on scheduling.
    """

    def __init__(self, strategy: tf.distribute.experimental.ParameterServerStrategy, *,
                 steps_per_execution: int):
        self.strategy = strategy
        self.coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
        self._steps_per_execution = steps_per_execution
        # The strategy keeps the resolver it was built from but, unlike the
        # others, does not expose it as `strategy.cluster_resolver` (None).
        self._workers = strategy._cluster_resolver.cluster_spec().num_tasks("worker")

    def train_iterator(self, split, *, global_batch_size: int, seed: int, skip_steps: int,
                       service=None):
        """Each worker's own input pipeline, one of as many as there are workers.

        The dataset function is traced once, here on the chief, and the same
        graph runs on every worker, so the InputContext TensorFlow gives it
        (one pipeline, index 0) is the same on every worker, and so is the seed
        of every random op in it (fixed by the run's global seed when traced):
        built from those alone, every worker reads the same batches. The
        worker's index is instead a value the coordinator feeds in when each
        worker runs the function (`experimental_get_current_worker_index`), so
        worker `w` is input pipeline `w`, reading its own shards (or slice of
        each step's indices) in the seeded order. Steps are scheduled onto
        whichever worker is free, so which worker ran how many is not recorded:
        a resumed run assumes they ran equal shares, and each worker skips its
        share. Through a tf.data service the workers share one job instead.
        """

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            # The pipelines' "global" batch is one batch per worker: a step here
            # is one worker's batch of `global_batch_size`.
            worker = tf.distribute.InputContext(
                num_input_pipelines=self._workers,
                input_pipeline_id=tf.distribute.coordinator.experimental_get_current_worker_index(),
                num_replicas_in_sync=self._workers * context.num_replicas_in_sync)
            return tfdata.input_pipeline(
                split, worker, global_batch_size=self._workers * global_batch_size, shuffle=True,
                seed=seed, repeat=True, skip_steps=skip_steps // self._workers, service=service)

        return iter(self.coordinator.create_per_worker_dataset(
            lambda: self.strategy.distribute_datasets_from_function(dataset_fn)))

    def run_steps(self, train_steps: Callable, iterator, steps: int) -> None:
        """Schedule `steps` in chunks of `steps_per_execution`; wait for all of them."""
        while steps > 0:
            chunk = min(steps, self._steps_per_execution)
            self.coordinator.schedule(train_steps, args=(iterator, tf.constant(chunk, tf.int64)))
            steps -= chunk
        self.coordinator.join()

    def eval_iterator(self, split, *, global_batch_size: int, seed: int):
        return iter(split.make_dataset(
            batch_size=global_batch_size, shuffle=False, seed=seed, repeat=False,
            drop_remainder=False,
        ))

    def run_replicas(self, fn: Callable, batch) -> None:
        fn(batch)


def make_execution(strategy: tf.distribute.Strategy, *, steps_per_execution: int):
    if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        return CoordinatedExecution(strategy, steps_per_execution=steps_per_execution)
    return LocalExecution(strategy)

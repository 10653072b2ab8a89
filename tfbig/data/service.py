"""Training input prepared by TensorFlow's tf.data service (`tf.data.experimental.service`).

A run whose input pipeline needs more cores than its training machines have
hands the pipeline to a tf.data service: a dispatcher, and tf.data workers on
any machines, run the tokens pipeline (TensorFlow ops only, so a worker needs
no tfbig) and send finished batches to the training tasks over gRPC.

Every input pipeline of the run (the one process, each MultiWorkerMirrored
worker, each parameter-server worker) reads from one job, shared by name,
with dynamic sharding (`ShardingPolicy.DYNAMIC`, TF's "distributed_epoch"):
the dispatcher hands out shard visits (the pipeline's source is a range of
visit numbers) one at a time to whichever tf.data worker asks, and each batch
goes to one reader. So readers never see the same window twice within an
epoch, whatever the number of tf.data workers, and a slow worker takes fewer
visits instead of stalling the rest.

What that gives up: the order in which batches arrive depends on timing, so
a run through the service is not bit-for-bit reproducible. A resumed run
restarts the stream at the shard visit holding its position (the same
arithmetic as in-process), so it neither replays nor skips an epoch, but the
windows of visits that were in flight at the checkpoint may be read twice or
not at all; TF documents dynamic sharding as at-most-once visitation (a
tf.data worker that dies loses its visit in flight). "parallel_epochs"
(`ShardingPolicy.OFF`) is not offered: every tf.data worker would produce the
whole seeded stream, so each batch would be trained on once per tf.data
worker; TF advises shuffling nondeterministically for that mode, which would
give up the (seed, position) stream for nothing the dynamic mode lacks.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class DataService:
    """A dispatcher, and the job a run's input pipelines share when it (re)starts at `start_step`."""

    dispatcher: str  # grpc://HOST:PORT
    run: str  # names the run, so two runs on one dispatcher never share a job
    start_step: int = 0

    @property
    def job_name(self) -> str:
        # Every input pipeline of one start derives the same name, so they share
        # the job; a restart at another step reads another stream, so it joins
        # a new job rather than the previous start's half-read one.
        return f"tfbig-{self.run}-from-step-{self.start_step}"

    def starting_at(self, step: int) -> "DataService":
        return dataclasses.replace(self, start_step=step)

    def distribute(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """`dataset`, run by the service's workers and read from the shared job."""
        return dataset.apply(tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=self.dispatcher, job_name=self.job_name,
        )).prefetch(tf.data.AUTOTUNE)

"""Strategy factory behaviour that holds in any process."""

import numpy as np
import tensorflow as tf

from tfbig.config import DistributeConfig
from tfbig.distribute import make_strategy


def all_reduce_ones(strategy, size):
    """Sum of a ones vector of `size` over the replicas, inside a compiled loop."""
    with strategy.scope():
        total = tf.Variable(tf.zeros([size]))

    @tf.function
    def steps():
        def replica_step():
            reduced = tf.distribute.get_replica_context().all_reduce("sum", tf.ones([size]))
            total.assign_add(reduced)

        for _ in tf.range(2):
            strategy.run(replica_step)

    steps()
    steps()
    return total.numpy()


def test_successive_mirrored_strategies_keep_their_collectives_apart():
    # Two strategies with different gradient sizes in one process (train, then
    # distill into a smaller student): with shared collective keys the second
    # all-reduce is paired with the first one's and the process aborts.
    for size in (100, 137, 300):
        strategy = make_strategy(DistributeConfig(strategy="mirrored"))
        np.testing.assert_array_equal(all_reduce_ones(strategy, size), np.full(size, 8.0))

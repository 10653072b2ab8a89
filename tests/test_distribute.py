"""Strategy factory behaviour that holds in any process."""

import re

import numpy as np
import pytest
import tensorflow as tf

from tfbig.config import DistributeConfig, config_from_dict
from tfbig.distribute import StrategyError, make_strategy
from tfbig.distribute.parameter_server import variable_partitioner
from tfbig.distribute.strategy import tpu_address


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


@pytest.mark.parametrize("strategy, message", [
    ("multi_worker", "multi_worker needs a cluster: TF_CONFIG is not set"),
    ("parameter_server", "tfbig launch --workers N --ps M"),
    ("tpu", "no TPU configured; looked at distribute.tpu, COLAB_TPU_ADDR and TPU_NAME"),
])
def test_cluster_strategies_say_what_they_looked_for(strategy, message, monkeypatch):
    for variable in ("TF_CONFIG", "COLAB_TPU_ADDR", "TPU_NAME"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(StrategyError, match=re.escape(message)):
        make_strategy(DistributeConfig(strategy=strategy))


def test_tpu_address_comes_from_config_then_colab_then_tpu_name(monkeypatch):
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    monkeypatch.setenv("TPU_NAME", "my-tpu")
    assert tpu_address(DistributeConfig(tpu="local")) == ("local", "distribute.tpu")
    assert tpu_address(DistributeConfig()) == ("grpc://10.0.0.2:8470", "COLAB_TPU_ADDR")
    monkeypatch.delenv("COLAB_TPU_ADDR")
    assert tpu_address(DistributeConfig()) == ("my-tpu", "TPU_NAME")


def test_tpu_runs_default_to_bfloat16_unless_the_config_says_otherwise():
    tpu = config_from_dict({"distribute": {"strategy": "tpu"}})
    assert tpu.train.precision == "mixed_bfloat16"
    chosen = config_from_dict({"distribute": {"strategy": "tpu"}, "train": {"precision": "float32"}})
    assert chosen.train.precision == "float32"
    assert config_from_dict({}).train.precision == "float32"


def test_parameter_server_partitioner_splits_big_variables_over_the_ps_tasks():
    partition = variable_partitioner(DistributeConfig(min_shard_bytes=64 << 10), num_ps=2)
    shape = tf.TensorShape([1024, 64])  # 256 KiB of float32
    assert partition(shape, tf.float32) == [2, 1]
    assert partition(tf.TensorShape([16, 64]), tf.float32) == [1, 1]  # 4 KiB: one shard
    fixed = variable_partitioner(DistributeConfig(variable_shards=4), num_ps=2)
    assert fixed(shape, tf.float32) == [4, 1]

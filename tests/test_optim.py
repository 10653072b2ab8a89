"""Learning-rate schedules and optimizers built from config."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfbig.config import config_from_dict
from tfbig.train import WarmupDecay, make_optimizer


def rates(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_warmup_then_cosine_to_the_floor():
    schedule = WarmupDecay(1.0, kind="cosine", warmup_steps=10, decay_steps=100, min_ratio=0.1)
    warm = rates(schedule, range(10))
    assert warm == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert rates(schedule, [10, 60, 110, 500]) == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_linear_step_and_constant():
    linear = WarmupDecay(2.0, kind="linear", decay_steps=10, min_ratio=0.0)
    assert rates(linear, [0, 5, 10, 20]) == pytest.approx([2.0, 1.0, 0.0, 0.0])
    step = WarmupDecay(1.0, kind="step", boundaries=[3, 6], factor=0.5)
    assert rates(step, [0, 2, 3, 5, 6, 100]) == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])
    assert rates(WarmupDecay(0.3), [0, 1000]) == pytest.approx([0.3, 0.3])


def test_schedule_round_trips_through_keras_config():
    schedule = WarmupDecay(1e-3, kind="step", warmup_steps=5, boundaries=[10], factor=0.3)
    restored = WarmupDecay.from_config(schedule.get_config())
    assert rates(restored, range(20)) == pytest.approx(rates(schedule, range(20)))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adafactor"])
def test_each_optimizer_takes_a_step(name):
    config = config_from_dict({"train": {"optimizer": {"name": name, "learning_rate": 0.1}}})
    optimizer = make_optimizer(config.train)
    weight = tf.Variable(np.ones((4, 4), np.float32))
    optimizer.apply_gradients([(tf.ones((4, 4)), weight)])
    assert float(tf.reduce_max(weight)) < 1.0


def test_adamw_decays_kernels_but_not_biases_or_norms():
    config = config_from_dict({"train": {
        "optimizer": {"name": "adamw", "learning_rate": 0.1, "weight_decay": 0.5},
        "schedule": {"name": "constant"}}})
    optimizer = make_optimizer(config.train)
    dense = keras.layers.Dense(3, name="dense")
    norm = keras.layers.LayerNormalization(name="layer_norm")
    dense.build((None, 3))
    norm.build((None, 3))
    for variable in dense.weights + norm.weights:
        variable.assign(tf.ones_like(variable))
    variables = dense.trainable_weights + norm.trainable_weights
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    # Zero gradients: only weight decay moves a variable, by lr * wd = 0.05.
    np.testing.assert_allclose(dense.kernel.numpy(), 0.95)
    for untouched in (dense.bias, norm.gamma, norm.beta):
        np.testing.assert_allclose(untouched.numpy(), 1.0)


def test_float16_gets_dynamic_loss_scaling():
    config = config_from_dict({"train": {"precision": "mixed_float16"}})
    assert isinstance(make_optimizer(config.train), keras.mixed_precision.LossScaleOptimizer)

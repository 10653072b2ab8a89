"""Quantization-aware training: the CNN end to end to an int8 TFLite file, the GPT
with tfbig's attention config under a 2-replica MirroredStrategy, rebuild
determinism, prune-preserving QAT, and selections that match nothing."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfbig import data, models
from tfbig.config import ConfigError, QATConfig
from tfbig.distribute import make_strategy
from tfbig.export.signatures import predict_function
from tfbig.export.tflite import TFLiteRunner, convert_int8, convert_tflite
from tfbig.train import Trainer, make_optimizer
from tfbig.train.compression.quantize import QATMethod

from runs import make_config

# Big enough that the int8 file is not mostly flatbuffer overhead (78K params).
CNN = {"name": "cnn", "filters": [32, 64], "blocks_per_stage": 1}
DIGITS = {"name": "digits"}
TRAIN = {"steps_per_execution": 10, "log_every": 10, "eval_steps": 2}


@pytest.fixture(scope="module")
def digits():
    return data.load_data(make_config("unused", model=CNN, data=DIGITS).data)


@pytest.fixture(scope="module")
def text():
    return data.load_data(make_config("unused").data)


def examples(split, count):
    """(inputs, targets) of the first `count` examples of `split` (all if fewer)."""
    dataset = split.make_dataset(batch_size=count, shuffle=False, seed=0, repeat=False,
                                 drop_remainder=False)
    inputs, targets = next(iter(dataset))
    return inputs.numpy(), targets.numpy()


def fit(model_or_wrap, config, source, run_dir):
    """Build (inside the strategy) and train; returns (model, TrainResult)."""
    keras.utils.set_random_seed(config.train.seed)
    strategy = make_strategy(config.distribute)
    with strategy.scope():
        model = model_or_wrap()
        optimizer = make_optimizer(config.train)
    trainer = Trainer(model=model, optimizer=optimizer, strategy=strategy, source=source,
                      config=config.train, run_dir=str(run_dir))
    return model, trainer.fit()


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, -1) == labels))


def agreement(logits, reference):
    """Top-1 agreement of two models' logits."""
    return accuracy(logits, np.argmax(reference, -1))


def close(logits, reference):
    """Max abs difference within 5% of the reference logits' range."""
    return np.max(np.abs(logits - reference)) <= 0.05 * np.max(np.abs(reference))


def variable_named(model, name):
    return next(v for v in model.weights if v.name == name)


@pytest.mark.slow
def test_cnn_qat_fine_tunes_and_converts_to_an_int8_tflite_that_matches(tmp_path, digits):
    config = make_config(tmp_path / "float", model=CNN, data=DIGITS, steps=60,
                         batch_size=32, **TRAIN)
    trained, _ = fit(lambda: models.build_model(config.model, digits.spec), config, digits,
                     tmp_path / "float")
    method = QATMethod(QATConfig())
    fine_tune = make_config(tmp_path / "qat", model=CNN, data=DIGITS, steps=20, batch_size=32,
                            optimizer={"name": "adam", "learning_rate": 3e-4}, **TRAIN)
    qat, result = fit(lambda: method.wrap(trained), fine_tune, digits, tmp_path / "qat")
    # Whole-model QAT, as quantize_model would do it.
    assert method.left_float == {}
    assert {"stem_conv", "stem_bn", "stage0_block0_add", "pool", "logits"} <= set(method.quantized)

    inputs, targets = examples(digits.eval, 256)  # all 179
    float_logits = trained(inputs, training=False).numpy()
    qat_logits = qat(inputs, training=False).numpy()
    # Measured: 98.9% top-1 agreement; eval accuracy 98.9% float, 100% QAT.
    assert agreement(qat_logits, float_logits) >= 0.95
    assert accuracy(qat_logits, targets) >= accuracy(float_logits, targets) - 0.02

    int8_path = convert_int8(qat, digits.spec, str(tmp_path / "qat_int8.tflite"))
    int8_logits = TFLiteRunner(int8_path)(inputs)
    # Measured: 100% top-1 agreement, max |diff| 0.09 on logits within +-6.
    assert agreement(int8_logits, qat_logits) >= 0.98
    assert close(int8_logits, qat_logits)
    # A CNN is int8 throughout already: calibration changes nothing that matters.
    calibrated = TFLiteRunner(convert_int8(qat, digits.spec, str(tmp_path / "calibrated.tflite"),
                                           calibration=examples(digits.train, 4)[0]))(inputs)
    assert agreement(calibrated, qat_logits) >= 0.98

    holder = tf.Module()
    holder.model_variables = list(trained.variables)
    float_path = convert_tflite(predict_function(trained, digits.spec), holder, "float32",
                                str(tmp_path / "float32.tflite"))
    # Measured 3.37x (int8 weights, int32 biases, per-channel scales).
    assert os.path.getsize(float_path) >= 3 * os.path.getsize(int8_path)


@pytest.mark.slow
def test_gpt_qat_fine_tunes_mirrored_and_converts(tmp_path, text):
    config = make_config(tmp_path, strategy="mirrored", steps=10, **TRAIN)
    method = QATMethod(QATConfig())
    qat, result = fit(lambda: method.wrap(models.build_model(config.model, text.spec)),
                      config, text, tmp_path)
    assert math.isfinite(result.train_metrics["loss"])
    assert method.quantized == ["block0_attention", "block0_attention_dropout", "block0_mlp_in",
                                "block0_mlp_out", "block0_mlp_dropout"]
    assert method.left_float["token_embedding"] == "embedding: float by rule"
    assert method.left_float["position_embedding"] == "position embedding: float by rule"
    assert method.left_float["final_ln"] == "LayerNormalization: float by rule"
    assert method.left_float["block0_ln1"] == (
        "LayerNormalization: float by rule (its output is quantized: int8 layers read it)")
    assert method.left_float["block0_mlp_residual"].startswith("no weights and a float input")
    # Each replica trained its own copy of every range; reads average them.
    ranges = [v for v in qat.variables if v.name.endswith(("_min:0", "_max:0"))]
    assert ranges and {v.synchronization for v in ranges} == {tf.VariableSynchronization.ON_READ}

    # `tfbig export` rebuilds the wrapped model outside the strategy and restores into it.
    rebuilt = QATMethod(QATConfig()).wrap(models.build_model(config.model, text.spec))
    status = tf.train.Checkpoint(model=rebuilt).restore(result.checkpoint)
    status.expect_partial().assert_existing_objects_matched()
    inputs = examples(text.eval, 8)[0]
    qat_logits = qat(inputs, training=False).numpy()
    np.testing.assert_allclose(rebuilt(inputs, training=False).numpy(), qat_logits, atol=1e-5)

    saved = str(tmp_path / "saved_model")
    holder = tf.Module()
    holder.model_variables = list(rebuilt.variables)
    tf.saved_model.save(holder, saved, signatures={
        "serving_default": predict_function(rebuilt, text.spec)})
    served = tf.saved_model.load(saved).signatures["serving_default"]
    np.testing.assert_allclose(served(inputs=tf.constant(inputs))["logits"].numpy(), qat_logits,
                               atol=1e-5)

    # The strategy-trained model converts as it is.
    int8_logits = TFLiteRunner(convert_int8(qat, text.spec, str(tmp_path / "gpt.tflite")))(inputs)
    # Measured: max |diff| 0.007 on logits up to 1.7 (0.09 on ~6 after 30 steps),
    # top-1 agreement 100%.
    assert close(int8_logits, qat_logits)
    assert agreement(int8_logits, qat_logits) >= 0.98


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt", "cnn"])
def test_a_rebuilt_wrap_restores_a_checkpoint_exactly(tmp_path, family, request):
    if family == "gpt":
        config, source = make_config(tmp_path), request.getfixturevalue("text")
    else:
        config = make_config(tmp_path, model=CNN, data=DIGITS)
        source = request.getfixturevalue("digits")
    inputs = examples(source.eval, 8)[0]
    first = QATMethod(QATConfig()).wrap(models.build_model(config.model, source.spec))
    first(inputs, training=True)  # moves the ranges off their initial values
    path = tf.train.Checkpoint(model=first).save(str(tmp_path / "ckpt"))

    second = QATMethod(QATConfig()).wrap(models.build_model(config.model, source.spec))
    # Names may differ (Keras numbers TF-MOT's `quantize_layer` per session); the
    # checkpoint matches objects by their place in the model, not by name.
    assert [v.shape for v in second.variables] == [v.shape for v in first.variables]
    tf.train.Checkpoint(model=second).restore(path).assert_consumed()
    np.testing.assert_array_equal(second(inputs, training=False).numpy(),
                                  first(inputs, training=False).numpy())


@pytest.mark.slow
def test_preserve_sparsity_keeps_the_zeros_of_a_pruned_model(text):
    model = models.build_model(make_config("unused").model, text.spec)
    kernels = {"block0_mlp_in/kernel:0": model.get_layer("block0_mlp_in").kernel,
               "block0_attention/query/kernel:0":
                   model.get_layer("block0_attention")._query_dense.kernel}
    for kernel in kernels.values():  # what 50% magnitude pruning leaves
        values = kernel.numpy()
        values[np.abs(values) < np.median(np.abs(values))] = 0.0
        kernel.assign(values)
    pruned = {name: kernel.numpy() for name, kernel in kernels.items()}
    inputs, targets = examples(text.eval, 8)

    def fine_tuned_kernels(preserve_sparsity):
        wrapped = QATMethod(QATConfig(preserve_sparsity=preserve_sparsity)).wrap(model)
        optimizer = keras.optimizers.Adam(1e-2)
        for _ in range(3):
            with tf.GradientTape() as tape:
                logits = wrapped(inputs, training=True)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                    targets, logits, from_logits=True))
            gradients = tape.gradient(loss, wrapped.trainable_variables)
            optimizer.apply_gradients(zip(gradients, wrapped.trainable_variables))
        return {name: variable_named(wrapped, name).numpy() for name in kernels}

    for name, kernel in fine_tuned_kernels(preserve_sparsity=True).items():
        np.testing.assert_array_equal(kernel == 0, pruned[name] == 0, err_msg=name)
        assert not np.allclose(kernel, pruned[name])  # it did train
    for name, kernel in fine_tuned_kernels(preserve_sparsity=False).items():
        assert np.mean(kernel == 0) < 0.1, name  # without it the zeros fill in


def test_the_selection_limits_what_is_quantized(text):
    method = QATMethod(QATConfig(layers="mlp"))
    method.plan(models.build_model(make_config("unused").model, text.spec))
    assert method.quantized == ["block0_mlp_in", "block0_mlp_out", "block0_mlp_dropout"]
    assert method.left_float["block0_attention"] == "not matched by compress.qat.layers"
    assert method.left_float["block0_ln2"] == (
        "LayerNormalization: float by rule (its output is quantized: int8 layers read it)")
    # Only the (now float) attention reads ln1.
    assert method.left_float["block0_ln1"] == "LayerNormalization: float by rule"


@pytest.mark.parametrize("pattern", ["^no_such_layer$", "ln"])
def test_a_selection_with_nothing_to_quantize_is_refused(pattern, text):
    model = models.build_model(make_config("unused").model, text.spec)
    with pytest.raises(ConfigError, match=r"compress\.qat\.layers: no layer of model 'gpt' can "
                                          r"be quantized with this selection; layers with "
                                          r"weights: token_embedding, position_embedding"):
        QATMethod(QATConfig(layers=pattern)).wrap(model)

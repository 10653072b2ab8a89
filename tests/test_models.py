"""Model builders: shapes, exact analytic sizes, Keras-layers-only graphs,
SavedModel round trips, GPT causality and precision."""

import re
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfbig.config import (CNNConfig, ConfigError, GPTConfig, LSTMConfig, MLPConfig,
                          TransformerEncoderConfig, load_config)
from tfbig.data import DataSpec
from tfbig.models import build_model, model_stats
from tfbig.train import make_optimizer

DIGITS = DataSpec("classification", (8, 8), "float32", 10)
TOKENS = DataSpec("classification", (12,), "int32", 3)
LM = DataSpec("lm", (16,), "int32", 256)
TINY_GPT = GPTConfig(max_len=32, d_model=32, num_layers=2, num_heads=2, dropout=0.1)

CASES = {
    "mlp": (MLPConfig(hidden_units=[32, 16], dropout=0.1), DIGITS),
    "cnn": (CNNConfig(filters=[8, 16], blocks_per_stage=1), DIGITS),
    "lstm": (LSTMConfig(units=16), DIGITS),
    "lstm_tokens": (LSTMConfig(units=8, num_layers=2, bidirectional=True, embedding_dim=8), TOKENS),
    "transformer_encoder": (TransformerEncoderConfig(d_model=16, num_heads=2, num_layers=1), DIGITS),
    "transformer_encoder_tokens": (TransformerEncoderConfig(d_model=16, num_heads=2, num_layers=1), TOKENS),
    "gpt": (TINY_GPT, LM),
    "gpt_untied": (GPTConfig(max_len=16, d_model=16, num_layers=1, num_heads=2,
                             tie_embeddings=False), LM),
}


def sample_inputs(spec, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (batch,) + spec.input_shape
    if spec.input_dtype == "int32":
        return rng.integers(0, 256, size=shape).astype(np.int32)
    return rng.random(shape).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_builds_with_exact_analytic_size_and_keras_layers_only(case):
    config, spec = CASES[case]
    model = build_model(config, spec)
    outputs = model(sample_inputs(spec), training=False)
    expected = (3, spec.input_shape[0], 256) if spec.task == "lm" else (3, spec.num_classes)
    assert outputs.shape == expected and outputs.dtype == tf.float32
    assert model.input.name == "inputs" and model.output_names == ["logits"]
    stats = model_stats(config, spec, batch_size=4, precision="float32", optimizer="adamw")
    assert stats["parameters"] == model.count_params()
    assert stats["trainable_parameters"] == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    lambdas = [layer.name for layer in model.submodules
               if type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda", "Lambda")]
    assert lambdas == []


@pytest.mark.slow
@pytest.mark.parametrize("case", ["cnn", "lstm", "gpt"])
def test_saved_model_round_trip(case, tmp_path):
    config, spec = CASES[case]
    model = build_model(config, spec)
    x = sample_inputs(spec)
    expected = model(x, training=False).numpy()
    model.save(tmp_path / "model")
    reloaded = keras.models.load_model(tmp_path / "model")
    np.testing.assert_allclose(reloaded(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
    serving = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    np.testing.assert_allclose(serving(inputs=tf.constant(x))["logits"].numpy(), expected,
                               rtol=1e-5, atol=1e-6)


def test_gpt_is_causal():
    model = build_model(TINY_GPT, LM)
    tokens = sample_inputs(LM, batch=1)
    changed = tokens.copy()
    changed[0, 10] = (changed[0, 10] + 1) % 256
    before = model(tokens, training=False).numpy()
    after = model(changed, training=False).numpy()
    np.testing.assert_allclose(after[0, :10], before[0, :10], rtol=1e-5, atol=1e-6)
    assert not np.allclose(after[0, 10:], before[0, 10:])


def test_gpt_accepts_windows_shorter_than_its_position_table():
    model = build_model(TINY_GPT, DataSpec("lm", (32,), "int32", 256))
    assert model(sample_inputs(LM), training=False).shape == (3, 16, 256)


def test_tied_embeddings_save_exactly_vocab_times_d_model():
    tied = build_model(TINY_GPT, LM).count_params()
    untied = build_model(GPTConfig(**{**TINY_GPT.__dict__, "tie_embeddings": False}), LM).count_params()
    assert untied - tied == 256 * 32


def test_gpt_under_mixed_bfloat16_keeps_float32_logits(float32_policy):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_model(TINY_GPT, LM)
    assert model.get_layer("block0_mlp_in").compute_dtype == "bfloat16"
    assert model(sample_inputs(LM), training=False).dtype == tf.float32


def test_stats_for_a_gpt2_xl_sized_config_are_instant():
    config = GPTConfig(vocab_size=50257, max_len=1024, d_model=1600, num_layers=48, num_heads=25)
    spec = DataSpec("lm", (1024,), "int32", 50257)
    start = time.perf_counter()
    stats = model_stats(config, spec, batch_size=8, precision="mixed_bfloat16", optimizer="adamw")
    assert time.perf_counter() - start < 0.5
    assert 1.5e9 < stats["parameters"] < 1.6e9
    # ~6N per token plus attention.
    assert 6 * stats["parameters"] < stats["train_flops_per_token"] < 8 * stats["parameters"]
    assert stats["optimizer_bytes"] == 2 * stats["weights_bytes"]
    adafactor = model_stats(config, spec, batch_size=8, precision="mixed_bfloat16",
                            optimizer="adafactor")
    assert adafactor["optimizer_bytes"] < stats["optimizer_bytes"] / 100


def independent_train_flops_per_token(model, seq: int) -> float:
    """6 per matmul weight, from the built model's kernels, plus tied head and attention.

    Counted from what Keras built, not from the config, so a layer the
    analytic walk in stats.py misses or mis-sizes shows up here.
    """
    kernels = sum(int(np.prod(w.shape)) for w in model.trainable_weights if "kernel" in w.name)
    vocab, d_model = model.get_layer("token_embedding").embeddings.shape
    layers = sum(1 for layer in model.layers if layer.name.endswith("_attention"))
    tied_head = 2 * vocab * d_model if not model.get_layer("logits").weights else 0
    attention = 2 * 2 * seq * d_model * layers  # QK^T and AV over the full square
    return 3 * (2 * kernels + tied_head + attention)  # backward = 2x forward


@pytest.mark.parametrize("name, vocab", [
    ("gpt_tiny", 256), ("gpt_laptop", 256), ("gpt2_small", 256),
    # GPT-2's tokenizer, as a prepared token data set would give it (124M: built slowly).
    pytest.param("gpt2_small", 50257, marks=pytest.mark.slow),
])
def test_info_on_the_shipped_gpts_is_exact(name, vocab):
    config = load_config(name)
    spec = DataSpec("lm", (config.data.seq_len,), "int32", vocab)
    model = build_model(config.model, spec)
    stats = model_stats(config.model, spec, batch_size=config.train.batch_size,
                        precision=config.train.precision, optimizer=config.train.optimizer.name)
    assert stats["parameters"] == stats["trainable_parameters"] == model.count_params()
    if vocab == 50257:
        assert model.count_params() == 124_439_808  # GPT-2 small's published count
    assert stats["train_flops_per_token"] == independent_train_flops_per_token(model, spec.input_shape[0])
    assert stats["weights_bytes"] == stats["gradients_bytes"] == 4 * model.count_params()
    optimizer = make_optimizer(config.train)
    optimizer.build(model.trainable_variables)
    slots = [v for v in optimizer.variables() if v.shape.rank]  # not the step counter
    assert stats["optimizer_bytes"] == sum(4 * int(np.prod(v.shape)) for v in slots)


def test_the_gpt_takes_its_vocabulary_from_the_data():
    spec = DataSpec("lm", (16,), "int32", 1000)
    model = build_model(TINY_GPT, spec)  # vocab_size 0: the data's
    assert model.get_layer("token_embedding").embeddings.shape == (1000, 32)
    assert model(sample_inputs(LM), training=False).shape == (3, 16, 1000)
    named = GPTConfig(**{**TINY_GPT.__dict__, "vocab_size": 1000})
    assert model_stats(named, spec, batch_size=1, precision="float32", optimizer="adamw") == \
        model_stats(TINY_GPT, spec, batch_size=1, precision="float32", optimizer="adamw")
    message = ("model.vocab_size: 256 differs from the data's vocabulary of 1000 tokens; "
               "set model.vocab_size to 0 (the data's) or to 1000")
    wrong = GPTConfig(**{**TINY_GPT.__dict__, "vocab_size": 256})
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_model(wrong, spec)
    with pytest.raises(ConfigError, match=re.escape(message)):
        model_stats(wrong, spec, batch_size=1, precision="float32", optimizer="adamw")


def test_wrong_data_for_a_model_is_a_clear_error():
    with pytest.raises(ValueError, match="the gpt model trains on language-model data"):
        build_model(TINY_GPT, DIGITS)
    with pytest.raises(ValueError, match="the cnn model is a classifier"):
        build_model(CNNConfig(), LM)
    with pytest.raises(ValueError, match="cnn takes images"):
        build_model(CNNConfig(), TOKENS)

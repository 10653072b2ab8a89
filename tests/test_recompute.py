"""Activation recomputation (`model.recompute`): same gradients, trains, exports."""

import numpy as np
import pytest
import tensorflow as tf

from runs import GPT, make_config
from tfbig import models
from tfbig.compress import compress_run
from tfbig.config import ConfigError, GPTConfig
from tfbig.data.spec import DataSpec
from tfbig.export import export_run
from tfbig.train import train
from tfbig.train import losses

SPEC = DataSpec("lm", (16,), "int32", 256)


def loss_and_gradients(model, tokens):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(losses.per_example_loss("lm", tokens, model(tokens, training=True)))
    return float(loss), [tf.convert_to_tensor(g).numpy()
                         for g in tape.gradient(loss, model.trainable_variables)]


def test_recomputed_blocks_give_the_same_gradients():
    settings = {"max_len": 16, "d_model": 32, "num_layers": 2, "num_heads": 4}
    plain = models.build_model(GPTConfig(**settings), SPEC)
    recomputed = models.build_model(GPTConfig(**settings, recompute=True), SPEC)
    assert [w.shape for w in recomputed.weights] == [w.shape for w in plain.weights]
    recomputed.set_weights(plain.get_weights())
    tokens = np.random.default_rng(0).integers(0, 256, (4, 16)).astype(np.int32)
    loss, gradients = loss_and_gradients(plain, tokens)
    loss_r, gradients_r = loss_and_gradients(recomputed, tokens)
    assert loss_r == pytest.approx(loss, rel=1e-6)
    for g, g_r in zip(gradients, gradients_r):
        np.testing.assert_allclose(g_r, g, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_recompute_trains_mirrored_exports_and_refuses_what_it_cannot_do(tmp_path):
    run = tmp_path / "run"
    result = train(make_config(run, model={**GPT, "recompute": True}, strategy="mirrored"))
    assert result.step == 20 and np.isfinite(result.eval_metrics["eval_loss"])
    saved = tf.saved_model.load(export_run(str(run), str(tmp_path / "models")).path)
    logits = saved.signatures["serving_default"](inputs=tf.zeros([1, 8], tf.int32))["logits"]
    assert logits.shape == (1, 8, 256)
    with pytest.raises(ConfigError, match="model.recompute=false to prune it"):
        compress_run(str(run), method="prune", output_dir=str(tmp_path / "pruned"))
    with pytest.raises(ConfigError, match="new dropout masks"):
        GPTConfig(max_len=16, dropout=0.1, recompute=True)

"""The Trainer on real data: learning, strategy and accumulation equivalence,
exact resume, mixed precision, divergence and early stopping."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfbig.config import ConfigError
from tfbig.train import TrainingDivergedError, read_metrics, train
from tfbig.train.checkpoint import CheckpointError, Checkpointer

from runs import GPT, make_config

def losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir) if "loss" in r]


def model_weights(run_dir, config):
    """Weights of the latest checkpoint, loaded into a fresh model."""
    from tfbig import data, models

    spec = data.load_data(config.data).spec
    model = models.build_model(config.model, spec)
    checkpointer = Checkpointer(str(run_dir / "checkpoints"), keep=1, model=model)
    tf.train.Checkpoint(model=model).restore(checkpointer.latest).expect_partial()
    return [w.copy() for w in model.get_weights()]


@pytest.mark.slow
def test_gpt_loss_falls_on_the_corpus(tmp_path):
    config = make_config(tmp_path, steps=150, log_every=10, steps_per_execution=10,
                         batch_size=16, eval_steps=8, checkpoint_every=150)
    result = train(config)
    first, last = losses(tmp_path)[0], losses(tmp_path)[-1]
    # ln(256) = 5.55 for a uniform guess over bytes; English text is far lower.
    assert first > 4.0
    assert last < 3.2, losses(tmp_path)
    assert result.eval_metrics["eval_perplexity"] == pytest.approx(
        math.exp(result.eval_metrics["eval_loss"]), rel=1e-6)
    assert result.eval_metrics["eval_perplexity"] < 25
    records = read_metrics(tmp_path)
    assert {"step", "loss", "learning_rate", "tokens_per_s"} <= set(records[0])
    assert any("eval_loss" in r and "eval_accuracy" in r for r in records)
    assert (tmp_path / "config.yaml").exists() and list((tmp_path / "logs").iterdir())


@pytest.mark.slow
def test_cnn_reaches_95_percent_on_digits(tmp_path):
    config = make_config(
        tmp_path, model={"name": "cnn", "filters": [16, 32], "blocks_per_stage": 1},
        data={"name": "digits", "eval_fraction": 0.2}, steps=250, batch_size=64,
        steps_per_execution=25, log_every=25, checkpoint_every=250, eval_steps=0,
        schedule={"name": "cosine", "warmup_steps": 10},
    )
    result = train(config)
    assert result.eval_metrics["eval_accuracy"] >= 0.95, result.eval_metrics


# Equivalence tests use SGD: Adam divides by sqrt(v), which turns float
# roundoff in an exactly-zero gradient (e.g. the attention key bias, to which
# softmax is invariant) into full-size, sign-random updates.
SGD = {"name": "sgd", "learning_rate": 0.3}


@pytest.mark.slow
def test_mirrored_matches_one_device(tmp_path):
    one = make_config(tmp_path / "one", steps=10, log_every=1, steps_per_execution=1,
                      optimizer=SGD)
    two = make_config(tmp_path / "two", strategy="mirrored", steps=10, log_every=1,
                      steps_per_execution=1, optimizer=SGD)
    train(one)
    train(two)
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=2e-4)
    for a, b in zip(model_weights(tmp_path / "one", one), model_weights(tmp_path / "two", two)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_accumulating_micro_batches_equals_one_big_batch(tmp_path):
    whole = make_config(tmp_path / "whole", steps=6, log_every=1, steps_per_execution=3,
                        optimizer=SGD)
    split = make_config(tmp_path / "split", steps=6, log_every=1, steps_per_execution=3,
                        grad_accum_steps=4, optimizer=SGD)
    train(whole)
    train(split)
    np.testing.assert_allclose(losses(tmp_path / "split"), losses(tmp_path / "whole"), rtol=1e-4)
    for a, b in zip(model_weights(tmp_path / "whole", whole),
                    model_weights(tmp_path / "split", split)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tmp_path):
    # Dropout on, so the random generators' state must be restored too.
    model = {**GPT, "dropout": 0.2}
    straight = make_config(tmp_path / "straight", model=model, steps=20)
    train(straight)
    first_half = make_config(tmp_path / "resumed", model=model, steps=10)
    train(first_half)
    second_half = make_config(tmp_path / "resumed", model=model, steps=20)
    train(second_half)
    assert [r["step"] for r in read_metrics(tmp_path / "resumed") if "loss" in r] == [5, 10, 15, 20]
    np.testing.assert_allclose(losses(tmp_path / "resumed"), losses(tmp_path / "straight"), rtol=1e-5)
    for a, b in zip(model_weights(tmp_path / "straight", straight),
                    model_weights(tmp_path / "resumed", second_half)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_resuming_with_another_model_is_refused(tmp_path):
    train(make_config(tmp_path, steps=5))
    with pytest.raises(ConfigError, match="model: differs from the run already in"):
        train(make_config(tmp_path, model={**GPT, "d_model": 16}, steps=10))


@pytest.mark.slow
def test_a_run_that_named_its_vocabulary_resumes_with_the_datas(tmp_path):
    # Runs saved before model.vocab_size defaulted to 0 (= the data's) wrote 256 out.
    train(make_config(tmp_path, model={**GPT, "vocab_size": 256}, steps=5))
    assert train(make_config(tmp_path, steps=10)).step == 10
    with pytest.raises(ConfigError, match="model.vocab_size: 300 differs from the data's "
                                          "vocabulary of 256 tokens"):
        train(make_config(tmp_path / "other", model={**GPT, "vocab_size": 300}, steps=5))


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains(tmp_path, precision, float32_policy):
    config = make_config(tmp_path, precision=precision, steps=40, log_every=10,
                         steps_per_execution=10, checkpoint_every=40)
    train(config)
    trajectory = losses(tmp_path)
    assert all(math.isfinite(x) for x in trajectory)
    assert trajectory[-1] < trajectory[0] - 0.5


@pytest.mark.slow
def test_divergence_stops_with_the_last_good_checkpoint_intact(tmp_path):
    mlp = {"name": "mlp", "hidden_units": [32]}
    digits = {"name": "digits"}
    train(make_config(tmp_path, model=mlp, data=digits, steps=10))
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    exploding = make_config(tmp_path, model=mlp, data=digits, steps=30,
                            optimizer={"learning_rate": 1e30, "clip_norm": 0.0})
    with pytest.raises(TrainingDivergedError, match="between steps 10 and 15.*ckpt-10"):
        train(exploding)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == checkpoints


@pytest.mark.slow
def test_early_stopping_on_an_eval_metric(tmp_path):
    # eval_loss falls while training works, so "max" mode sees no improvement.
    config = make_config(tmp_path, steps=100, eval_every=5,
                         early_stopping={"metric": "eval_loss", "mode": "max", "patience": 2})
    result = train(config)
    assert result.stopped_early
    assert result.step == 15


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    train(make_config(tmp_path, steps=20, checkpoint_every=10))
    data_file = next((tmp_path / "checkpoints").glob("ckpt-20.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:100])  # a copy cut short
    with pytest.warns(UserWarning, match="ckpt-20 is unreadable.*falling back"):
        result = train(make_config(tmp_path, steps=30, checkpoint_every=10))
    assert result.step == 30 and result.checkpoint.endswith("ckpt-30")
    steps = [r["step"] for r in read_metrics(tmp_path) if "loss" in r]
    assert steps == [5, 10, 15, 20, 25, 30]  # steps 11-20 redone, logged once
    assert all(math.isfinite(v) for v in losses(tmp_path))


@pytest.mark.slow
def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
    train(make_config(tmp_path, steps=10, checkpoint_every=10))
    for data_file in (tmp_path / "checkpoints").glob("ckpt-*.data-*"):
        data_file.write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no readable checkpoint"):
        train(make_config(tmp_path, steps=20, checkpoint_every=10))

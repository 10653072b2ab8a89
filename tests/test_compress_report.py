"""The before/after report of `tfbig compress`: what each figure measures, on real
artifacts (float SavedModel, TFLite), checked against numbers computed independently."""

import json
import math
import os

import numpy as np
import pytest
import tf_keras as keras

from tfbig.compress import report
from tfbig.config import DataConfig, MLPConfig
from tfbig.data import load_data
from tfbig.export.signatures import predict_function
from tfbig.export.tflite import convert_tflite
from tfbig.models import build_model

from runs import make_config

RUNS = 5  # latency runs: the tests check the figure exists, not its value
BATCH = 64


def nonzero_fraction(arrays) -> float:
    return sum(int(np.count_nonzero(a)) for a in arrays) / sum(a.size for a in arrays)


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits"))


@pytest.fixture(scope="module")
def mlp(digits):
    """A small MLP trained for a few epochs.

    Trained, so its accuracy is far from chance (equal accuracies then say
    something) and its biases are not all zero: the TFLite converter drops an
    all-zero bias, which would make an untrained model's params differ.
    """
    keras.utils.set_random_seed(0)
    model = build_model(MLPConfig(hidden_units=[32, 32]), digits.spec)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.train.make_dataset(batch_size=BATCH, shuffle=True, seed=0, repeat=False),
              epochs=5, verbose=0)
    return model


@pytest.fixture(scope="module")
def sparse_mlp(mlp):
    """The same model with every other element of its first kernel set to zero by hand."""
    model = keras.models.clone_model(mlp)
    weights = mlp.get_weights()
    kernel = weights[0].copy()
    kernel.reshape(-1)[::2] = 0.0
    weights[0] = kernel
    model.set_weights(weights)
    return model


@pytest.fixture(scope="module")
def measured(digits, mlp, sparse_mlp, tmp_path_factory):
    """{name: (SavedModel path, its measurement)} for the dense and the zeroed model."""
    root = tmp_path_factory.mktemp("saved")
    result = {}
    for name, model in (("dense", mlp), ("sparse", sparse_mlp)):
        path = report.save_saved_model(model, digits.spec, str(root / name))
        result[name] = path, report.measure_saved_model(path, digits, latency_runs=RUNS)
    return result


@pytest.mark.slow
def test_nonzero_fraction_is_counted_from_the_saved_weights(mlp, sparse_mlp, measured):
    dense, sparse = measured["dense"][1], measured["sparse"][1]
    dense_weights, sparse_weights = mlp.get_weights(), sparse_mlp.get_weights()
    total = sum(w.size for w in dense_weights)
    assert dense["params"] == sparse["params"] == total
    assert dense["nonzero_fraction"] == pytest.approx(nonzero_fraction(dense_weights), abs=1e-12)
    assert sparse["nonzero_fraction"] == pytest.approx(nonzero_fraction(sparse_weights), abs=1e-12)
    # The drop is the non-zeros that were zeroed, over all weights: about
    # half of the 64x32 first kernel out of ~3.5K weights.
    zeroed = np.count_nonzero(dense_weights[0]) - np.count_nonzero(sparse_weights[0])
    assert zeroed == pytest.approx(dense_weights[0].size / 2, abs=2)
    drop = dense["nonzero_fraction"] - sparse["nonzero_fraction"]
    assert drop == pytest.approx(zeroed / total, abs=1e-12)
    assert 0.28 < drop < 0.31
    # Zeros do not shrink dense storage, only its compressed size.
    assert sparse["size_bytes"] == dense["size_bytes"]
    assert sparse["gzip_bytes"] < 0.85 * dense["gzip_bytes"]
    assert dense["gzip_bytes"] < dense["size_bytes"]
    path = measured["dense"][0]
    variables = [os.path.join(path, "variables", name)
                 for name in os.listdir(os.path.join(path, "variables"))]
    assert dense["size_bytes"] == sum(os.path.getsize(f) for f in variables)
    assert dense["artifact"] == {"format": "saved_model", "path": path}
    assert dense["latency_ms"] > 0 and dense["latency_runs"] == RUNS


def test_eval_accuracy_is_the_keras_models_accuracy(digits, mlp, sparse_mlp, measured):
    for model, (_, result) in ((mlp, measured["dense"]), (sparse_mlp, measured["sparse"])):
        right, losses = [], []
        for inputs, targets in digits.eval.make_dataset(
                batch_size=BATCH, shuffle=False, seed=0, repeat=False, drop_remainder=False):
            logits = model(inputs, training=False).numpy()
            right.extend(np.argmax(logits, -1) == targets.numpy())
            losses.extend(keras.losses.sparse_categorical_crossentropy(
                targets, logits, from_logits=True).numpy())
        assert result["eval_examples"] == len(right) == digits.eval.num_examples
        assert result["eval_accuracy"] == np.mean(right)
        assert result["eval_loss"] == pytest.approx(np.mean(losses), rel=1e-5)
        assert "eval_perplexity" not in result
    assert measured["dense"][1]["eval_accuracy"] > 0.8  # trained: far from chance (0.1)


def test_eval_steps_limits_the_batches(digits, measured):
    result = report.measure_saved_model(measured["dense"][0], digits, eval_steps=1,
                                        latency_runs=1, batch_size=16)
    assert result["eval_examples"] == 16


def test_tflite_is_measured_like_the_saved_model(digits, sparse_mlp, measured, tmp_path):
    saved = measured["sparse"][1]
    predict = predict_function(sparse_mlp, digits.spec)
    float32 = convert_tflite(predict, sparse_mlp, "float32", str(tmp_path / "f.tflite"))
    result = report.measure_tflite(float32, digits, latency_runs=RUNS)
    assert result["artifact"] == {"format": "tflite", "path": float32}
    assert result["size_bytes"] == os.path.getsize(float32)
    assert result["gzip_bytes"] < result["size_bytes"]
    assert result["eval_accuracy"] == saved["eval_accuracy"]
    assert result["eval_loss"] == pytest.approx(saved["eval_loss"], rel=1e-5)
    assert result["eval_examples"] == saved["eval_examples"]
    assert result["params"] == saved["params"]
    assert result["nonzero_fraction"] == saved["nonzero_fraction"]
    assert result["latency_ms"] > 0
    # int8 weights: a quarter of the bytes, the same weights counted, and the
    # pruned zeros still zero (plus any weight too small for the int8 scale).
    dynamic = convert_tflite(predict, sparse_mlp, "dynamic_range", str(tmp_path / "d.tflite"))
    quantized = report.measure_tflite(dynamic, digits, eval_steps=1, latency_runs=RUNS)
    assert quantized["params"] == saved["params"]
    assert quantized["nonzero_fraction"] <= saved["nonzero_fraction"]
    assert quantized["size_bytes"] < 0.5 * result["size_bytes"]


@pytest.mark.slow
def test_language_model_reports_perplexity(tmp_path):
    cfg = make_config(tmp_path / "run")
    source = load_data(cfg.data)
    keras.utils.set_random_seed(0)
    model = build_model(cfg.model, source.spec)
    path = report.save_saved_model(model, source.spec, str(tmp_path / "saved_model"))
    saved = report.measure_saved_model(path, source, eval_steps=2, latency_runs=RUNS,
                                       batch_size=8)
    assert saved["eval_examples"] == 16
    assert saved["eval_perplexity"] == pytest.approx(math.exp(saved["eval_loss"]), rel=1e-12)
    assert "eval_accuracy" not in saved
    # Untrained: about a uniform guess over 256 bytes.
    assert 150 < saved["eval_perplexity"] < 400
    tflite = convert_tflite(predict_function(model, source.spec), model, "float32",
                            str(tmp_path / "gpt.tflite"))
    result = report.measure_tflite(tflite, source, eval_steps=2, latency_runs=RUNS, batch_size=8)
    assert result["eval_perplexity"] == pytest.approx(saved["eval_perplexity"], rel=1e-5)
    table = report.markdown_table("ptq-float16", saved, result)
    assert "| eval perplexity | " in table


def test_save_saved_model_replaces_atomically(digits, mlp, sparse_mlp, tmp_path):
    import tensorflow as tf

    path = str(tmp_path / "out" / "model")
    report.save_saved_model(mlp, digits.spec, path)
    report.save_saved_model(sparse_mlp, digits.spec, path)
    assert os.listdir(tmp_path / "out") == ["model"]  # no staging or old copy left
    inputs = next(iter(digits.eval.make_dataset(batch_size=8, shuffle=False, seed=0,
                                                repeat=False)))[0]
    loaded = tf.saved_model.load(path)
    assert list(loaded.signatures) == ["serving_default"]
    logits = loaded.signatures["serving_default"](inputs=inputs)["logits"].numpy()
    np.testing.assert_allclose(logits, sparse_mlp(inputs).numpy(), rtol=1e-5, atol=1e-6)


def test_write_report(measured, tmp_path):
    before, after = measured["dense"][1], measured["sparse"][1]
    details = {"pruned": ["dense0"], "left_dense": {"logits": "not matched"},
               "target_sparsity": np.float32(0.5)}
    out = tmp_path / "OUT"
    paths = report.write_report(str(out), method="prune", before=before, after=after,
                                details=details)
    assert paths == {kind: str(out / f"report.{kind}") for kind in ("json", "md", "png")}
    assert sorted(os.listdir(out)) == ["report.json", "report.md", "report.png"]  # no temp files

    with open(paths["json"]) as f:
        loaded = json.load(f)
    assert loaded["method"] == "prune"
    assert loaded["before"] == json.loads(json.dumps(before))
    assert loaded["after"] == json.loads(json.dumps(after))
    assert loaded["details"] == {**details, "target_sparsity": 0.5}
    for entry in (loaded["before"], loaded["after"]):
        assert {"eval_accuracy", "eval_loss", "size_bytes", "gzip_bytes", "nonzero_fraction",
                "latency_ms", "params", "artifact"} <= set(entry)

    with open(paths["md"]) as f:
        markdown = f.read()
    assert report.markdown_table("prune", before, after) in markdown
    for row in ("| metric | before | after (prune) | change |", "| eval accuracy | ",
                "| eval loss | ", "| size | ", "| gzip size | ", "| non-zero weights | ",
                "| params | ", "| latency (batch 1) | ", "| artifact | "):
        assert row in markdown
    assert '"left_dense"' in markdown

    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_markdown_table_says_changes_in_words():
    def entry(**values):
        base = {"eval_accuracy": 0.975, "eval_loss": 0.1, "size_bytes": 4_100_000,
                "gzip_bytes": 3_800_000, "nonzero_fraction": 1.0, "params": 1_000_000,
                "latency_ms": 2.0, "artifact": {"format": "saved_model", "path": "m"}}
        return {**base, **values}

    before = entry()
    after = entry(eval_accuracy=0.972, size_bytes=1_000_000, gzip_bytes=3_800_000,
                  nonzero_fraction=0.5, latency_ms=1.0,
                  artifact={"format": "tflite", "path": "OUT/model_int8.tflite"})
    rows = report.markdown_table("ptq-int8", before, after).splitlines()
    assert rows[2] == "| eval accuracy | 97.5% | 97.2% | -0.3 points |"
    assert rows[3] == "| eval loss | 0.1000 | 0.1000 | +0.0000 |"
    assert rows[4] == "| size | 3.9 MiB | 976.6 KiB | 4.1x smaller |"
    assert rows[5] == "| gzip size | 3.6 MiB | 3.6 MiB | same |"
    assert rows[6] == "| non-zero weights | 100.0% | 50.0% | -50.0 points |"
    assert rows[7] == "| params | 1,000,000 | 1,000,000 | same |"
    assert rows[8] == "| latency (batch 1) | 2.000 ms | 1.000 ms | 2.0x faster |"
    assert rows[9] == "| artifact | float SavedModel | TFLite `model_int8.tflite` |  |"

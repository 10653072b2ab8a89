"""Export: versioned atomic SavedModels, TF Serving signatures, warmup, manifest,
generate with a key/value cache, ONNX and TFLite parity, and bad arguments."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfbig import cli
from tfbig.export import (
    ExportError, ParityError, VersionWriteError, export_run, restore_run, verify_manifest,
)
from tfbig.export.exporter import sample_inputs
from tfbig.export.generate import make_generate
from tfbig.export.manifest import MANIFEST_FILE, read_manifest
from tfbig.export.parity import check_parity
from tfbig.export.reference_sample import MAX_EXAMPLES
from tfbig.export.reference_stats import REFERENCE_STATS_FILE, read_reference_stats
from tfbig.export.signatures import serialize_examples
from tfbig.export.warmup import WARMUP_FILE, read_warmup
from tfbig.train import train

from runs import GPT, make_config

DIGITS_CNN = {"name": "cnn", "filters": [8, 16], "blocks_per_stage": 1}


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cnn_run")
    train(make_config(run_dir, model=DIGITS_CNN, data={"name": "digits"}, steps=40,
                      batch_size=32, eval_every=40, checkpoint_every=40,
                      optimizer={"learning_rate": 1e-2}))
    return str(run_dir)


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gpt_run")
    train(make_config(run_dir, model={**GPT, "num_layers": 2}, steps=30, checkpoint_every=30))
    return str(run_dir)


@pytest.fixture(scope="module")
def cnn_export(cnn_run, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("models") / "digits")
    return export_run(cnn_run, base, onnx=True, tflite=("float32", "int8"))


@pytest.fixture(scope="module")
def gpt_export(gpt_run, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("models") / "gpt")
    return export_run(gpt_run, base, onnx=True, tflite=("float32",))


@pytest.fixture(scope="module")
def cnn_trained(cnn_run):
    return restore_run(cnn_run)


@pytest.fixture(scope="module")
def gpt_trained(gpt_run):
    return restore_run(gpt_run)


def digits_batch(trained, n=5):
    return sample_inputs(trained)["serving_default"]["inputs"][:n]


# ------------------------------------------------------------------ layout


@pytest.mark.slow
def test_version_directory_layout_and_manifest(cnn_export, cnn_trained):
    assert cnn_export.version == 1 and cnn_export.path.endswith(os.sep + "1")
    names = set(os.listdir(cnn_export.path))
    assert {"saved_model.pb", "variables", "assets.extra"} <= names
    assert os.listdir(os.path.dirname(cnn_export.path)) == ["1"]  # no staging left behind
    manifest = read_manifest(cnn_export.path)
    assert manifest["training"]["step"] == cnn_trained.step == 40
    assert 0 < manifest["training"]["eval_metrics"]["eval_accuracy"] <= 1
    assert manifest["config"]["model"]["name"] == "cnn"
    assert manifest["signatures"]["classify"]["method_name"] == "tensorflow/serving/classify"
    assert manifest["signatures"]["serving_default"]["inputs"]["inputs"] == {
        "dtype": "float32", "shape": [None, 8, 8]}
    assert manifest["artifacts"] == {"onnx": "assets.extra/model.onnx",
                                     "tflite_float32": "assets.extra/model_float32.tflite",
                                     "tflite_int8": "assets.extra/model_int8.tflite"}
    assert "variables/variables.index" in manifest["files"]
    assert WARMUP_FILE in manifest["files"]
    assert verify_manifest(cnn_export.path) == []


@pytest.mark.slow
def test_manifest_detects_a_changed_or_extra_file(cnn_run, tmp_path):
    result = export_run(cnn_run, str(tmp_path / "m"))
    with open(os.path.join(result.path, "variables", "variables.index"), "ab") as f:
        f.write(b"x")
    open(os.path.join(result.path, "stray.txt"), "w").close()
    assert sorted(verify_manifest(result.path)) == [
        "stray.txt: not in the manifest", "variables/variables.index: sha256 differs"]


@pytest.mark.slow
def test_saved_model_cli_lists_signatures_with_serving_method_names(cnn_export):
    shown = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "show", "--all",
         "--dir", cnn_export.path], capture_output=True, text=True, check=True).stdout
    for name, method in [("serving_default", "predict"), ("classify", "classify"),
                         ("regress", "regress")]:
        block = shown.split(f"signature_def['{name}']")[1].split("signature_def[")[0]
        assert f"Method name is: tensorflow/serving/{method}" in block


# ------------------------------------------------------------- signatures


@pytest.mark.slow
def test_classify_and_regress_agree_with_the_model(cnn_export, cnn_trained):
    loaded = tf.saved_model.load(cnn_export.path)
    x = digits_batch(cnn_trained)
    probabilities = tf.nn.softmax(cnn_trained.model(x)).numpy()
    examples = tf.constant(serialize_examples(x))
    classified = loaded.signatures["classify"](inputs=examples)
    assert classified["classes"].numpy()[0].tolist() == [str(i).encode() for i in range(10)]
    np.testing.assert_allclose(classified["scores"].numpy(), probabilities, atol=1e-6)
    regressed = loaded.signatures["regress"](inputs=examples)["outputs"].numpy()
    np.testing.assert_allclose(regressed, probabilities.max(-1), atol=1e-6)
    logits = loaded.signatures["serving_default"](inputs=tf.constant(x))["logits"]
    np.testing.assert_allclose(logits.numpy(), cnn_trained.model(x).numpy(), atol=1e-5)


@pytest.mark.slow
def test_warmup_file_holds_a_replayable_request_per_signature(cnn_export):
    logs = read_warmup(os.path.join(cnn_export.path, WARMUP_FILE))
    kinds = sorted(log.WhichOneof("log_type") for log in logs)
    assert kinds == ["classify_log", "predict_log", "regress_log"]
    loaded = tf.saved_model.load(cnn_export.path)
    for log in logs:
        if log.HasField("predict_log"):
            request = log.predict_log.request
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        else:
            request = getattr(log, log.WhichOneof("log_type")).request
            inputs = {"inputs": [e.SerializeToString() for e in request.input.example_list.examples]}
        outputs = loaded.signatures[request.model_spec.signature_name or "serving_default"](
            **{k: tf.constant(v) for k, v in inputs.items()})
        assert all(np.isfinite(v.numpy()).all() for v in outputs.values() if v.dtype.is_floating)


FRESH_PROCESS = """
import json, os, sys
import numpy as np
import tensorflow as tf
assert "TF_USE_LEGACY_KERAS" not in os.environ
loaded = tf.saved_model.load(sys.argv[1])
calls = json.loads(sys.argv[2])
results = {}
for name, inputs in calls.items():
    tensors = {k: tf.constant(v["value"], dtype=v["dtype"]) for k, v in inputs.items()}
    results[name] = {k: v.numpy().tolist() if v.dtype != tf.string
                     else [s.decode("latin-1") for s in v.numpy()]
                     for k, v in loaded.signatures[name](**tensors).items()}
assert not any(m.startswith(("tfbig", "tf_keras")) for m in sys.modules), "imported tfbig/tf_keras"
print(json.dumps(results))
"""


def run_fresh(path, calls):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, path, json.dumps(calls)],
                            capture_output=True, text=True, env=env, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_loads_in_a_fresh_process_without_tfbig(cnn_export, cnn_trained, gpt_export,
                                                 gpt_trained):
    x = digits_batch(cnn_trained)
    out = run_fresh(cnn_export.path, {"serving_default": {
        "inputs": {"value": x.tolist(), "dtype": "float32"}}})
    np.testing.assert_allclose(out["serving_default"]["logits"], cnn_trained.model(x).numpy(),
                               atol=1e-5)
    prompts = ["def ", "The object"]
    generate = make_generate(gpt_trained.model, gpt_trained.config.model)
    expected = generate(tf.constant(prompts), max_new_tokens=6, temperature=0.0, top_k=0,
                        seed=tf.constant(0, tf.int64))
    out = run_fresh(gpt_export.path, {"generate": {
        "text": {"value": prompts, "dtype": "string"},
        "max_new_tokens": {"value": 6, "dtype": "int32"},
        "temperature": {"value": 0.0, "dtype": "float32"},
        "top_k": {"value": 0, "dtype": "int32"}, "seed": {"value": 0, "dtype": "int64"}}})
    assert out["generate"]["tokens"] == expected["tokens"].numpy().tolist()
    assert [t.encode("latin-1") for t in out["generate"]["text"]] == expected["text"].numpy().tolist()


# --------------------------------------------------------------- generate


def greedy_reference(model, prompt: bytes, steps: int) -> bytes:
    """Step-by-step argmax decoding with the full model, no cache."""
    ids = list(prompt)
    for _ in range(steps):
        logits = model(np.array([ids], np.int32), training=False).numpy()[0, -1, :256]
        ids.append(int(np.argmax(logits)))
    return bytes(ids[len(prompt):])


def call_generate(function, prompts, n, *, temperature=0.0, top_k=0, seed=0):
    return function(tf.constant(prompts), max_new_tokens=tf.constant(n),
                    temperature=tf.constant(float(temperature)), top_k=tf.constant(top_k),
                    seed=tf.constant(seed, tf.int64))


@pytest.mark.slow
def test_greedy_generate_equals_step_by_step_argmax(gpt_trained):
    generate = make_generate(gpt_trained.model, gpt_trained.config.model)
    prompts = [b"x", b"Return the", b"class C:\n  def"]  # different lengths in one batch
    out = call_generate(generate, prompts, 12)
    for prompt, text in zip(prompts, out["text"].numpy()):
        assert text == greedy_reference(gpt_trained.model, prompt, 12)
    assert out["tokens"].shape == (3, 12)
    uncached = make_generate(gpt_trained.model, gpt_trained.config.model, use_cache=False)
    assert (call_generate(uncached, prompts, 12)["tokens"].numpy() == out["tokens"].numpy()).all()


@pytest.mark.slow
def test_sampling_is_seeded_and_top_k_1_is_greedy(gpt_trained):
    generate = make_generate(gpt_trained.model, gpt_trained.config.model)
    prompts = [b"import ", b"while True"]
    first = call_generate(generate, prompts, 16, temperature=1.0, top_k=20, seed=3)["tokens"]
    again = call_generate(generate, prompts, 16, temperature=1.0, top_k=20, seed=3)["tokens"]
    other = call_generate(generate, prompts, 16, temperature=1.0, top_k=20, seed=4)["tokens"]
    assert (first.numpy() == again.numpy()).all()
    assert not (first.numpy() == other.numpy()).all()
    top1 = call_generate(generate, prompts, 16, temperature=1.0, top_k=1, seed=5)["tokens"]
    greedy = call_generate(generate, prompts, 16)["tokens"]
    assert (top1.numpy() == greedy.numpy()).all()


@pytest.mark.slow
@pytest.mark.parametrize("prompts, n, message", [
    ([b"x" * 30], 3, "max_len 32"),
    ([b"ok", b""], 3, "at least one token"),
    ([b"ok"], 0, "max_new_tokens must be at least 1"),
])
def test_generate_rejects_impossible_requests(gpt_trained, prompts, n, message):
    generate = make_generate(gpt_trained.model, gpt_trained.config.model)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        call_generate(generate, prompts, n)


# ------------------------------------------------------- ONNX / TFLite


@pytest.mark.slow
def test_onnx_and_tflite_artifacts_match_the_model(cnn_export, cnn_trained, gpt_export,
                                                   gpt_trained):
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    for export, trained, x in [
        (cnn_export, cnn_trained, digits_batch(cnn_trained, 3)),
        (gpt_export, gpt_trained, sample_inputs(gpt_trained)["serving_default"]["inputs"][:2, :20]),
    ]:
        expected = trained.model(x).numpy()
        session = onnxruntime.InferenceSession(
            os.path.join(export.path, export.artifacts["onnx"]))
        np.testing.assert_allclose(session.run(None, {"inputs": x})[0], expected, atol=1e-4)
        runner = Interpreter(model_path=os.path.join(
            export.path, export.artifacts["tflite_float32"])).get_signature_runner()
        np.testing.assert_allclose(runner(inputs=x)["logits"], expected, atol=1e-4)
    int8 = cnn_export.parity["tflite_int8"]
    assert int8["top1_agreement"] >= 0.85 and int8["max_abs_error"] > 0


@pytest.mark.slow
def test_tflite_files_carry_no_tensor_names_but_keep_their_signature(cnn_export):
    from ai_edge_litert.interpreter import Interpreter

    path = os.path.join(cnn_export.path, cnn_export.artifacts["tflite_int8"])
    interpreter = Interpreter(model_path=path)
    assert {d["name"] for d in interpreter.get_tensor_details()} == {""}
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["inputs"], "outputs": ["logits"]}}


@pytest.mark.slow
def test_a_mixed_bfloat16_run_exports_float32_onnx_and_tflite(tmp_path):
    # tf2onnx writes mismatched float16/bfloat16 types for a mixed graph; the
    # portable artifacts come from a float32 twin with the same weights.
    run_dir = tmp_path / "bf16"
    train(make_config(run_dir, steps=10, checkpoint_every=10, precision="mixed_bfloat16"))
    result = export_run(str(run_dir), str(tmp_path / "m"), onnx=True, tflite=("float32",))
    assert result.parity["onnx"]["max_abs_error"] < 1e-4
    assert result.parity["tflite_float32"]["max_abs_error"] < 1e-4
    assert read_manifest(result.path)["config"]["train"]["precision"] == "mixed_bfloat16"


def test_parity_failure_names_the_artifact_and_error():
    expected = np.array([[0.0, 2.0], [1.0, 0.0]])
    with pytest.raises(ParityError, match=r"model\.onnx: max abs error 0\.5"):
        check_parity("model.onnx", expected + [[0.5, 0], [0, 0]], expected, kind="onnx")
    with pytest.raises(ParityError, match=r"model_int8\.tflite: top-1 agreement 50\.0%"):
        check_parity("model_int8.tflite", [[0.0, 2.0], [0.0, 1.0]], expected, kind="tflite_int8")
    assert check_parity("x", expected + 1e-6, expected, kind="onnx")["top1_agreement"] == 1.0


# ------------------------------------------------------ versions, atomicity


@pytest.mark.slow
def test_versions_increment_refuse_overwrite_and_replace_when_told(cnn_run, tmp_path):
    base = str(tmp_path / "digits")
    assert export_run(cnn_run, base).version == 1
    assert export_run(cnn_run, base).version == 2
    with pytest.raises(ExportError, match="version 2 already exists"):
        export_run(cnn_run, base, version=2)
    before = read_manifest(os.path.join(base, "2"))["created"]
    replaced = export_run(cnn_run, base, version=2, overwrite=True)
    assert replaced.version == 2 and read_manifest(replaced.path)["files"]
    assert sorted(os.listdir(base)) == ["1", "2"] and before
    assert os.stat(replaced.path).st_mode & 0o055  # readable by others, not mkdtemp's 0700


@pytest.mark.slow
def test_a_failure_mid_export_leaves_no_version(cnn_run, tmp_path, monkeypatch):
    from tfbig.export import exporter

    def broken(path, manifest):
        raise OSError("disk full")

    monkeypatch.setattr(exporter, "write_manifest", broken)
    base = tmp_path / "digits"
    with pytest.raises(VersionWriteError, match="version 1 could not be written to .*: disk full; "
                                                "nothing was left behind") as raised:
        export_run(cnn_run, str(base))
    assert isinstance(raised.value.__cause__, OSError)
    assert os.listdir(base) == []


@pytest.mark.slow
def test_a_parity_failure_leaves_no_version(cnn_run, tmp_path, monkeypatch):
    from tfbig.export import parity

    monkeypatch.setitem(parity.MAX_RELATIVE_ERROR, "tflite_float16", 0.0)
    base = tmp_path / "digits"
    with pytest.raises(ParityError, match=r"model_float16\.tflite: max abs error"):
        export_run(cnn_run, str(base), tflite=("float16",))
    assert os.listdir(base) == []


# ------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_a_failed_conversion_is_one_line_exit_1_and_no_version(cnn_run, tmp_path, capsys,
                                                                   monkeypatch):
    from tfbig.export import exporter

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed\n  deep TF detail")

    monkeypatch.setattr(exporter, "convert_tflite", broken)
    base = tmp_path / "m"
    assert cli.main(["export", cnn_run, "--model-base-path", str(base), "--tflite", "float16"]) == 1
    err = capsys.readouterr().err
    assert err == ("tfbig export: error: assets.extra/model_float16.tflite: conversion failed: "
                   "converter crashed\n")
    assert os.listdir(base) == []


@pytest.mark.slow
def test_cli_export(cnn_run, tmp_path, capsys):
    base = str(tmp_path / "digits")
    assert cli.main(["export", cnn_run, "--model-base-path", base, "--version", "7"]) == 0
    out = capsys.readouterr().out
    assert f"exported version 7 to {base}/7" in out and "classify" in out
    assert os.path.exists(os.path.join(base, "7", MANIFEST_FILE))


@pytest.mark.parametrize("args, message", [
    (["export", "{tmp}/nowhere"], "is not a tfbig run directory"),
    (["export", "{run}", "--model-base-path", "{tmp}/m", "--tflite", "float32,int4"],
     "unknown TFLite variant(s) 'int4'; known: float32, float16, dynamic_range, int8"),
    (["export", "{run}", "--model-base-path", "{tmp}/m", "--onnx-opset", "30"], "opset 30"),
    (["export", "{run}", "--model-base-path", "{tmp}/m", "--version", "0"],
     "version must be a positive integer"),
    (["export", "{run}", "--checkpoint", "{tmp}/ckpt-9"], "does not exist"),
    (["export", "{run}", "--model-base-path", "{tmp}/m", "--sign-key", "{tmp}/key.pem"],
     "--sign-key {tmp}/key.pem: cannot read it"),
])
def test_cli_export_bad_input_is_one_clear_line(cnn_run, tmp_path, capsys, args, message):
    argv = [a.format(tmp=tmp_path, run=cnn_run) for a in args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and err.count("\n") == 1, err


def test_cli_export_refuses_an_existing_version(cnn_run, tmp_path, capsys):
    base = str(tmp_path / "m")
    os.makedirs(os.path.join(base, "1"))
    assert cli.main(["export", cnn_run, "--model-base-path", base, "--version", "1"]) == 2
    assert "version 1 already exists" in capsys.readouterr().err
    assert os.listdir(os.path.join(base, "1")) == []


# ------------------------------------------------------------ reference statistics


def _histograms_sum_to_their_counts(stats):
    for name, feature in stats["features"].items():
        key = "histogram" if feature["kind"] == "numeric" else "counts"
        for split, summary in feature["splits"].items():
            assert sum(summary[key]) == summary["count"], (name, split)


@pytest.mark.slow
def test_reference_stats_of_a_classifier_match_its_data_and_answers(cnn_export, cnn_trained, tmp_path):
    import shutil

    stats = read_reference_stats(cnn_export.path)
    assert REFERENCE_STATS_FILE in read_manifest(cnn_export.path)["files"]
    eval_count = min(MAX_EXAMPLES, cnn_trained.source.eval.num_examples)
    assert stats["examples"] == {"train": MAX_EXAMPLES, "eval": eval_count}
    _histograms_sum_to_their_counts(stats)
    pixels = [name for name in stats["features"] if name.startswith("inputs[")]
    assert len(pixels) == 64 and stats["features"]["inputs[12]"]["element"] == 12
    assert {f["splits"]["train"]["count"] for f in map(stats["features"].get, pixels)} == {MAX_EXAMPLES}
    # The eval sample is the split's first rows: recount labels and the served model's classes.
    images, labels = next(iter(cnn_trained.source.eval.make_dataset(
        batch_size=eval_count, shuffle=False, seed=0, repeat=False, drop_remainder=False)))
    classes = tf.saved_model.load(cnn_export.path).signatures["classify"](
        inputs=tf.constant(serialize_examples(images.numpy())))["scores"].numpy().argmax(axis=1)
    assert stats["features"]["label"]["splits"]["eval"]["counts"] == np.bincount(labels, minlength=11).tolist()
    predicted = stats["features"]["predicted_class"]
    assert predicted["splits"]["eval"]["counts"] == np.bincount(classes, minlength=11).tolist()
    assert predicted["categories"] == [str(i) for i in range(10)]
    assert stats["features"]["score"]["bin_edges"][::10] == [0.0, 1.0]
    # Covered by the manifest: a changed statistic is a changed version.
    copy = str(tmp_path / "1")
    shutil.copytree(cnn_export.path, copy)
    with open(os.path.join(copy, REFERENCE_STATS_FILE), "a") as f:
        f.write(" ")
    assert verify_manifest(copy) == [f"{REFERENCE_STATS_FILE}: sha256 differs"]


@pytest.mark.slow
def test_reference_stats_of_a_language_model(gpt_export, gpt_trained):
    stats = read_reference_stats(gpt_export.path)
    assert REFERENCE_STATS_FILE in read_manifest(gpt_export.path)["files"]
    assert stats["task"] == "lm"
    _histograms_sum_to_their_counts(stats)
    seq_len = gpt_trained.config.data.seq_len
    features, examples = stats["features"], stats["examples"]
    assert features["tokens"]["splits"]["train"]["count"] == examples["train"] * seq_len
    assert features["tokens"]["categories"] == [str(i) for i in range(gpt_trained.source.spec.num_classes)]
    assert features["predicted_token"]["splits"]["eval"]["count"] == examples["eval_responses"] * seq_len
    for name in ("prompt_length", "output_length", "generated_token"):
        assert features[name]["signature"] == "generate"
    assert features["prompt_length"]["splits"]["eval"]["count"] == examples["generate_prompts"]

"""`tfbig export`: a trained run -> one verified version in a TF Serving model base path.

The version directory holds the SavedModel (signatures with TF Serving's
method names), `assets.extra/tf_serving_warmup_requests`, optional ONNX and
TFLite artifacts under `assets.extra/`, `assets.extra/reference_stats.json`
(see `tfbig.export.reference_stats`) and `assets.extra/tfbig_manifest.json`,
signed when a key is given (`assets.extra/tfbig_manifest.sig`, see
`tfbig.export.signing`).
Everything is written into a hidden staging directory and checked there:
the SavedModel is reloaded and every signature, and every artifact, must
reproduce the in-memory model on real examples; only then does the staging
directory become `BASE/VERSION`. A failure at any point leaves no version.

The SavedModel's root is a bare `tf.Module` holding the variables, not the
Keras model: it loads with `tf.saved_model.load` and serves from
`tensorflow_model_server` with no tfbig code and no custom objects, and
saving skips tracing every Keras layer.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os

import numpy as np
import tensorflow as tf

import tfbig
from tfbig import saved_model
from tfbig.config import config_to_dict
from tfbig.export import signatures as sig
from tfbig.export.errors import ArtifactError, ExportError
from tfbig.export.generate import make_generate
from tfbig.export.manifest import write_manifest
from tfbig.export.onnx import DEFAULT_OPSET, ONNX_FILE, OnnxRunner, export_onnx
from tfbig.export.parity import check_parity
from tfbig.export.stream import check_stream, make_stream_functions
from tfbig.export.text_codec import codec_for
from tfbig.export.reference_sample import reference_stats
from tfbig.export.reference_stats import write_reference_stats
from tfbig.export.restore import TrainedModel, float32_model, restore_run
from tfbig.export.signing import key_id, load_private_key, sign_version
from tfbig.config.schema import TFLITE_VARIANTS as VARIANTS
from tfbig.export.tflite import TFLiteRunner, convert_tflite, tflite_file
from tfbig.export.versions import ASSETS_EXTRA, check_version, next_version, staged_version
from tfbig.export.warmup import (
    EXPECTED_FILE, expected_logs, warmup_logs, write_prediction_logs, write_warmup,
)
from tfbig.rundir import RunDir

SAMPLE_BATCH = 8
# What writing a version raises when the disk or its permissions refuse: OSError
# from Python's writes, TensorFlow's own error types from its (SaveV2, ...).
WRITE_ERRORS = (OSError, tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError)
GENERATE_SAMPLE_TOKENS = 8
TOKENIZER_FILE = os.path.join(ASSETS_EXTRA, "tokenizer.model")
ARTIFACT_KINDS = ("onnx", "tflite")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: str
    version: int
    signatures: tuple[str, ...]
    artifacts: dict[str, str]  # kind -> path relative to `path`
    parity: dict[str, dict]  # artifact -> its agreement with the in-memory model
    signed_by: str | None = None  # the key id of the signing key (tfbig.export.signing)


def export_run(run_dir: str, model_base_path: str | None = None, *, version: int | None = None,
               overwrite: bool = False, onnx: bool = False, onnx_opset: int = DEFAULT_OPSET,
               tflite: tuple[str, ...] = (), checkpoint: str | None = None,
               sign_key: str | None = None) -> ExportResult:
    """Export the latest (or given) checkpoint of `run_dir` as a new version.

    `model_base_path` defaults to `RUN_DIR/export`; `version` to the next
    integer there; `sign_key` is the path of an Ed25519 private key (PEM)
    that signs the version. See `export_model` for the rest.
    """
    _check_options(tflite, onnx_opset)
    private_key = load_private_key(sign_key) if sign_key else None
    model_base_path = model_base_path or RunDir(run_dir).export
    if version is not None:  # refuse before the slow part, not after it
        check_version(model_base_path, version, overwrite=overwrite)
    trained = restore_run(run_dir, checkpoint)
    return export_model(
        trained, model_base_path, version=version, overwrite=overwrite, onnx=onnx,
        onnx_opset=onnx_opset, tflite=tflite, sign_key=private_key,
    )


def export_model(trained: TrainedModel, model_base_path: str, *, version: int | None = None,
                 overwrite: bool = False, onnx: bool = False, onnx_opset: int = DEFAULT_OPSET,
                 tflite: tuple[str, ...] = (), sign_key=None) -> ExportResult:
    """Write `trained` as `model_base_path/VERSION`, verified, atomically; signed with
    `sign_key` (an Ed25519PrivateKey) when given."""
    _check_options(tflite, onnx_opset)
    version = next_version(model_base_path) if version is None else version
    check_version(model_base_path, version, overwrite=overwrite)
    codec = codec_for(trained.config.data)
    functions = serving_functions(trained, codec)
    streaming = stream_functions(trained, codec)
    samples = sample_inputs(trained, codec)
    expected = {name: _numpy(functions[name](**_tensors(samples[name]))) for name in functions}
    with staged_version(model_base_path, version, overwrite=overwrite,
                        write_errors=WRITE_ERRORS) as staging:
        # The codec's tokenizer resources are saved with the graph; the stream functions are
        # attributes, not signatures: see export/stream.py.
        save_servable(staging, trained.model, functions, codec=codec, **streaming)
        sig.set_method_names(staging, {name: sig.METHOD_NAMES[name] for name in functions})
        write_warmup(staging, warmup_logs(samples))
        write_prediction_logs(staging, EXPECTED_FILE, expected_logs(samples, expected))
        parity, specs = _check_saved_model(staging, samples, expected)
        artifacts, artifact_parity = _write_artifacts(
            staging, trained, samples[sig.PREDICT][sig.INPUT_KEY], onnx=onnx,
            onnx_opset=onnx_opset, tflite=tflite)
        parity.update(artifact_parity)
        tokenizer = _write_tokenizer(staging, codec) if sig.GENERATE in functions else None
        write_reference_stats(staging, reference_stats(trained, functions, codec))
        write_manifest(staging, {
            "format": "tfbig-export/1",
            "tfbig_version": tfbig.__version__,
            "tensorflow_version": tf.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "config": config_to_dict(trained.config),
            "training": {"step": trained.step, "checkpoint": trained.checkpoint,
                         "eval_metrics": trained.eval_metrics},
            "signatures": specs,
            "artifacts": artifacts,
            "parity": parity,
            **({"tokenizer": tokenizer} if tokenizer else {}),
        })
        if sign_key is not None:
            sign_version(staging, sign_key)
    return ExportResult(
        path=os.path.join(model_base_path, str(version)), version=version,
        signatures=tuple(functions), artifacts=artifacts, parity=parity,
        signed_by=None if sign_key is None else key_id(sign_key.public_key()),
    )


def _write_tokenizer(staging: str, codec) -> dict:
    """The tokenizer runs inside `generate`; `serving_default`, ONNX and TFLite take token ids,
    so a SentencePiece model also ships beside them for callers that tokenize themselves."""
    entry = {"kind": codec.kind, "in_graph": [sig.GENERATE, sig.GENERATE_START, sig.GENERATE_NEXT],
             "token_ids": [sig.PREDICT, *ARTIFACT_KINDS]}
    if codec.kind == "sentencepiece":
        entry["file"] = TOKENIZER_FILE
        with open(os.path.join(staging, TOKENIZER_FILE), "wb") as f:
            f.write(codec.model_proto())
    return entry


def _write_artifacts(staging: str, trained: TrainedModel, inputs: np.ndarray, *, onnx: bool,
                     onnx_opset: int, tflite: tuple[str, ...]):
    """The ONNX/TFLite files asked for, each checked; (kind -> relative path, kind -> parity)."""
    artifacts, parity = {}, {}
    portable = float32_model(trained)
    predict = sig.predict_function(portable, trained.source.spec)
    check = functools.partial(_write_artifact, staging, inputs=inputs,
                              expected=predict(tf.constant(inputs))[sig.LOGITS].numpy())
    if onnx:
        artifacts["onnx"] = os.path.join(ASSETS_EXTRA, ONNX_FILE)
        parity["onnx"] = check(artifacts["onnx"], "onnx", OnnxRunner,
                               lambda path: export_onnx(predict, path, opset=onnx_opset))
    calibration = calibration_examples(trained) if "int8" in tflite else None
    for variant in tflite:
        kind = f"tflite_{variant}"
        artifacts[kind] = os.path.join(ASSETS_EXTRA, tflite_file(variant))
        parity[kind] = check(
            artifacts[kind], kind, TFLiteRunner,
            lambda path, v=variant: convert_tflite(predict, portable, v, path,
                                                   calibration=calibration))
    return artifacts, parity


def _write_artifact(staging: str, relative: str, kind: str, runner, convert, *,
                    inputs, expected) -> dict:
    """Convert one artifact into `staging/relative`, run it, and check its parity."""
    path = os.path.join(staging, relative)
    try:
        convert(path)
        outputs = runner(path)(inputs)
    except Exception as e:  # converters fail deep inside TF/tf2onnx: name what failed
        raise ArtifactError(f"{relative}: conversion failed: {_reason(e)}") from e
    return check_parity(relative, outputs, expected, kind=kind)


def _reason(error: Exception) -> str:
    """The informative line of a converter error.

    The TFLite converter reports MLIR errors as many `loc(...): error: ...`
    lines of call sites; its last `error:` line says what went wrong.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line.split("error: ", 1)[1] for line in lines if "error: " in line]
    if errors:
        return errors[-1]
    return lines[0] if lines else type(error).__name__


def save_servable(path: str, model, signatures: dict, **objects) -> None:
    """A SavedModel at `path` with `signatures` (name -> tf.function) over `model`'s variables.

    Its root is a bare `tf.Module` holding `model.variables` (and `objects`,
    whose resources the signatures use), not the Keras model: see the module
    docstring. No Keras metadata and no wrapper variables a compression
    method's `finalize` stripped: the files are what a server loads.
    """
    holder = tf.Module()
    holder.model_variables = list(model.variables)
    for name, value in objects.items():
        setattr(holder, name, value)
    tf.saved_model.save(holder, path, signatures=signatures)


def _check_options(tflite, onnx_opset: int) -> None:
    unknown = [v for v in tflite if v not in VARIANTS]
    if unknown:
        raise ExportError(f"unknown TFLite variant(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(VARIANTS)}")
    if not 9 <= onnx_opset <= 18:
        raise ExportError(f"onnx opset {onnx_opset} is outside what tf2onnx 1.17 writes (9-18)")


def serving_functions(trained: TrainedModel, codec) -> dict:
    """Signature name -> tf.function, by what the model is; `codec` is the text codec of `generate`."""
    model, spec = trained.model, trained.source.spec
    functions = {sig.PREDICT: sig.predict_function(model, spec)}
    if spec.task == "classification":
        functions[sig.CLASSIFY] = sig.classify_function(model, spec)
        functions[sig.REGRESS] = sig.regress_function(model, spec)
    if trained.config.model.name == "gpt":
        functions[sig.GENERATE] = make_generate(model, trained.config.model, codec=codec)
    return functions


def stream_functions(trained: TrainedModel, codec) -> dict:
    """The stepwise `generate` a GPT carries beside its signatures (none for other models)."""
    if trained.config.model.name != "gpt":
        return {}
    return make_stream_functions(trained.model, trained.config.model, codec=codec)


def sample_inputs(trained: TrainedModel, codec=None) -> dict[str, dict[str, np.ndarray]]:
    """Real eval examples as each signature's named inputs (for warmup and parity); the
    generate prompts are eval tokens turned back into text by `codec` (the data's)."""
    codec = codec_for(trained.config.data) if codec is None else codec
    dataset = trained.source.eval.make_dataset(
        batch_size=SAMPLE_BATCH, shuffle=False, seed=0, repeat=False, drop_remainder=False)
    inputs = next(iter(dataset))[0].numpy()
    samples = {sig.PREDICT: {sig.INPUT_KEY: inputs}}
    if trained.source.spec.task == "classification":
        examples = np.array(sig.serialize_examples(inputs), dtype=object)
        samples[sig.CLASSIFY] = {sig.INPUT_KEY: examples}
        samples[sig.REGRESS] = {sig.INPUT_KEY: examples}
    if trained.config.model.name == "gpt":
        # Prompts of different lengths, so the warmup covers the mixed-length path.
        longest = trained.config.model.max_len - GENERATE_SAMPLE_TOKENS
        prompts = [codec.prompt(row[: min(longest, 8 * (i + 1))]) for i, row in enumerate(inputs[:3])]
        samples[sig.GENERATE] = {
            "text": np.array(prompts, dtype=object),
            "max_new_tokens": np.array(GENERATE_SAMPLE_TOKENS, np.int32),
            "temperature": np.array(0.0, np.float32),
            "top_k": np.array(0, np.int32),
            "seed": np.array(0, np.int64),
        }
    return samples


def calibration_examples(trained: TrainedModel, count: int = 64) -> np.ndarray:
    """`count` shuffled training inputs: the representative dataset of int8 conversion."""
    dataset = trained.source.train.make_dataset(
        batch_size=count, shuffle=True, seed=0, repeat=False, drop_remainder=False)
    return next(iter(dataset))[0].numpy()


def _check_saved_model(export_dir: str, samples: dict, expected: dict):
    """Reload the SavedModel; compare every signature, and the stream with `generate`;
    describe the signatures' specs."""
    loaded = saved_model.load(export_dir)
    parity, specs = {}, {}
    for name, function in loaded.signatures.items():
        outputs = _numpy(function(**_tensors(samples[name])))
        for key, value in expected[name].items():
            artifact = f"saved_model signature {name!r} output {key!r}"
            parity[f"saved_model:{name}:{key}"] = check_parity(
                artifact, outputs[key], value, kind="saved_model")
        specs[name] = {
            "method_name": sig.METHOD_NAMES[name],
            "inputs": {k: _spec(v) for k, v in function.structured_input_signature[1].items()},
            "outputs": {k: _spec(v) for k, v in function.structured_outputs.items()},
        }
    if hasattr(loaded, sig.GENERATE_START):
        parity[f"saved_model:{sig.GENERATE_START}/{sig.GENERATE_NEXT}"] = check_stream(loaded, samples[sig.GENERATE])
    return parity, specs


def _spec(tensor) -> dict:
    return {"dtype": tensor.dtype.name, "shape": tensor.shape.as_list()}


def _tensors(inputs: dict) -> dict:
    return {k: tf.constant(v) for k, v in inputs.items()}


def _numpy(outputs: dict) -> dict:
    return {k: v.numpy() for k, v in outputs.items()}

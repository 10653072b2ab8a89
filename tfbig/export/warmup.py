"""`assets.extra/tf_serving_warmup_requests`: TF Serving's warmup file, and tfbig's
`assets.extra/tfbig_expected_responses`.

Both are TFRecords of `PredictionLog` protos. TF Serving (and tfbig's embedded
server) replays each warmup request once before marking a version AVAILABLE,
so the first real request does not pay for graph initialisation. One record
per signature, built from real examples of the run's eval data.

The expected responses hold the same examples as Predict requests together
with what the trained model answered in memory at export time: a validator
(`tfbig models verify`) sends them to a server that loaded the version and
compares, which checks the whole serving path against the trained model.
"""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2, input_pb2, predict_pb2, prediction_log_pb2, regression_pb2,
)

from tfbig.export import signatures as sig
from tfbig.export.versions import ASSETS_EXTRA

WARMUP_FILE = os.path.join(ASSETS_EXTRA, "tf_serving_warmup_requests")
EXPECTED_FILE = os.path.join(ASSETS_EXTRA, "tfbig_expected_responses")


def predict_log(signature: str, inputs: dict) -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))


def _examples(serialized: list[bytes]) -> input_pb2.Input:
    examples = [tf.train.Example.FromString(s) for s in serialized]
    return input_pb2.Input(example_list=input_pb2.ExampleList(examples=examples))


def classify_log(serialized: list[bytes]) -> prediction_log_pb2.PredictionLog:
    request = classification_pb2.ClassificationRequest(input=_examples(serialized))
    request.model_spec.signature_name = sig.CLASSIFY
    return prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(request=request))


def regress_log(serialized: list[bytes]) -> prediction_log_pb2.PredictionLog:
    request = regression_pb2.RegressionRequest(input=_examples(serialized))
    request.model_spec.signature_name = sig.REGRESS
    return prediction_log_pb2.PredictionLog(
        regress_log=prediction_log_pb2.RegressLog(request=request))


def warmup_logs(samples: dict[str, dict]) -> list[prediction_log_pb2.PredictionLog]:
    """One log per signature from `samples` (signature -> its named inputs)."""
    logs = []
    for signature, inputs in samples.items():
        if signature == sig.CLASSIFY:
            logs.append(classify_log(list(inputs[sig.INPUT_KEY])))
        elif signature == sig.REGRESS:
            logs.append(regress_log(list(inputs[sig.INPUT_KEY])))
        else:
            logs.append(predict_log(signature, inputs))
    return logs


def expected_logs(samples: dict[str, dict], expected: dict[str, dict]) -> list[prediction_log_pb2.PredictionLog]:
    """Every signature as a Predict request, with the in-memory model's outputs as its response.

    Predict runs any signature, classify and regress ones included, so one
    request kind covers them all.
    """
    logs = []
    for signature, inputs in samples.items():
        log = predict_log(signature, inputs)
        for name, value in expected[signature].items():
            log.predict_log.response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        logs.append(log)
    return logs


def write_prediction_logs(export_dir: str, relative: str, logs) -> str:
    path = os.path.join(export_dir, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def write_warmup(export_dir: str, logs) -> str:
    return write_prediction_logs(export_dir, WARMUP_FILE, logs)


def read_warmup(path: str) -> list[prediction_log_pb2.PredictionLog]:
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(path)]

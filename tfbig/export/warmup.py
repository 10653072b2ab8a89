"""`assets.extra/tf_serving_warmup_requests`: TF Serving's warmup file.

A TFRecord of `PredictionLog` protos; TF Serving (and tfbig's embedded
server) replays each request once before marking a version AVAILABLE, so the
first real request does not pay for graph initialisation. One record per
signature, built from real examples of the run's eval data.
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


def write_warmup(export_dir: str, logs) -> str:
    path = os.path.join(export_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup(path: str) -> list[prediction_log_pb2.PredictionLog]:
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(path)]

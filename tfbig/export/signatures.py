"""Serving signatures of a tfbig model, in the shapes TF Serving's APIs expect.

- `serving_default` (Predict API): `inputs` -> `logits`, batch dimension None.
- `classify` (Classify API, classifiers): serialized `tf.Example`s under the
  input key `inputs` -> `classes` (class ids as strings) and `scores`
  (softmax probabilities), one column per class, as Estimator exports did.
- `regress` (Regress API, classifiers): serialized `tf.Example`s -> `outputs`,
  the probability of the most likely class (one float per example: a
  confidence a caller can threshold).
- `generate` (Predict API, GPT only): see `tfbig.export.generate`.

Beside them a GPT carries `generate_start`/`generate_next`, tf.functions that
are not signatures (so TF Serving does not list them): see `tfbig.export.stream`.

The Example feature holding the model input is named `inputs` too, flattened
(e.g. 64 floats for an 8x8 image), float_list or int64_list by input dtype.

TF Serving dispatches Classify/Regress only to signatures whose method name
is `tensorflow/serving/classify` / `.../regress`; TF2's `tf.saved_model.save`
writes the predict method name for every signature, so `set_method_names`
rewrites them in `saved_model.pb` after saving.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
# No public API recomputes fingerprint.pb, whose checksum covers saved_model.pb.
from tensorflow.python.saved_model import fingerprinting_utils

from tfbig.protocol import (
    CLASSES, CLASSIFY_METHOD, DEFAULT_SIGNATURE, GENERATE_NEXT_FUNCTION, GENERATE_SIGNATURE,
    GENERATE_START_FUNCTION, INPUT_KEY, LOGITS, OUTPUTS, PREDICT_METHOD, REGRESS_METHOD, SCORES,
)

PREDICT = DEFAULT_SIGNATURE
CLASSIFY = "classify"
REGRESS = "regress"
GENERATE = GENERATE_SIGNATURE
GENERATE_START = GENERATE_START_FUNCTION
GENERATE_NEXT = GENERATE_NEXT_FUNCTION

METHOD_NAMES = {
    PREDICT: PREDICT_METHOD,
    CLASSIFY: CLASSIFY_METHOD,
    REGRESS: REGRESS_METHOD,
    GENERATE: PREDICT_METHOD,
}


def input_spec(spec) -> tf.TensorSpec:
    """The model input with a None batch (and, for token ids, None length)."""
    shape = (None, None) if spec.task == "lm" else (None, *spec.input_shape)
    return tf.TensorSpec(shape, spec.input_dtype, name=INPUT_KEY)


def predict_function(model, spec):
    @tf.function(input_signature=[input_spec(spec)])
    def predict(inputs):
        return {LOGITS: tf.cast(model(inputs, training=False), tf.float32)}

    return predict


def _example_features(spec) -> dict:
    dtype = tf.float32 if spec.input_dtype == "float32" else tf.int64
    return {INPUT_KEY: tf.io.FixedLenFeature(spec.input_shape, dtype)}


def _probabilities(model, spec, serialized):
    features = tf.io.parse_example(serialized, _example_features(spec))
    inputs = tf.cast(features[INPUT_KEY], spec.input_dtype)
    return tf.nn.softmax(tf.cast(model(inputs, training=False), tf.float32))


def classify_function(model, spec):
    class_names = tf.constant([str(i) for i in range(spec.num_classes)])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
    def classify(inputs):
        scores = _probabilities(model, spec, inputs)
        classes = tf.tile(class_names[None], [tf.shape(scores)[0], 1])
        return {CLASSES: classes, SCORES: scores}

    return classify


def regress_function(model, spec):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
    def regress(inputs):
        return {OUTPUTS: tf.reduce_max(_probabilities(model, spec, inputs), axis=-1)}

    return regress


def serialize_examples(inputs: np.ndarray) -> list[bytes]:
    """Model inputs (batch first) as the serialized `tf.Example`s `classify` parses."""
    examples = []
    for row in np.asarray(inputs):
        flat = row.reshape(-1)
        if np.issubdtype(flat.dtype, np.floating):
            feature = tf.train.Feature(float_list=tf.train.FloatList(value=flat.tolist()))
        else:
            feature = tf.train.Feature(int64_list=tf.train.Int64List(value=flat.tolist()))
        example = tf.train.Example(features=tf.train.Features(feature={INPUT_KEY: feature}))
        examples.append(example.SerializeToString())
    return examples


def set_method_names(export_dir: str, method_names: dict[str, str]) -> None:
    """Rewrite the method name of each named signature in `export_dir/saved_model.pb`."""
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        for name, method in method_names.items():
            if name in meta_graph.signature_def:
                meta_graph.signature_def[name].method_name = method
    with open(path, "wb") as f:
        f.write(saved_model.SerializeToString())
    fingerprinting_utils.write_fingerprint(export_dir)

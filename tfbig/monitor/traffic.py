"""Logged traffic as the reference statistics' features, counted into their buckets.

A version's `reference_stats.json` (tfbig.export.reference_stats) says where
each feature lives: a request or response tensor of a signature, an element
of one example, and a transform (`derived`). Here each logged PredictionLog
is read the same way and its values are counted with the reference's own
functions (`histogram`, `category_counts`) into the reference's bins and
categories, so traffic and reference are comparable bucket by bucket.

A request feature is counted from every successful request holding its
tensor: a Predict request's input, or the `tf.Example` feature of a
Classify/Regress request (an example's flat float_list is the flattened
tensor). A response feature is counted from the responses of its signature
only (each signature names its outputs). Failed requests count in the error
rate, not in the features: what the model refused is not what it served.
"""

from __future__ import annotations

import numpy as np
from tensorflow_serving.apis import prediction_log_pb2

from tfbig.export.reference_stats import category_counts, histogram
from tfbig.protocol import CLASSES, DEFAULT_SIGNATURE, OUTPUTS, SCORES
from tfbig.serving.codec import from_tensor_proto

# Values held before they are counted: bounded memory whatever the log's size.
PENDING_VALUES = 1 << 18


def record_tensors(log: prediction_log_pb2.PredictionLog) -> tuple[str, dict, dict] | None:
    """(signature, request tensors, response tensors) of a logged request, as numpy arrays;
    None for a kind that carries no tensors of one signature (MultiInference)."""
    kind = log.WhichOneof("log_type")
    signature = log.log_metadata.model_spec.signature_name or DEFAULT_SIGNATURE
    entry = getattr(log, kind) if kind else None
    if kind == "predict_log":
        return (signature, {name: from_tensor_proto(t) for name, t in entry.request.inputs.items()},
                {name: from_tensor_proto(t) for name, t in entry.response.outputs.items()})
    if kind == "classify_log":
        results = entry.response.result.classifications
        response = {SCORES: np.asarray([[c.score for c in r.classes] for r in results], np.float32),
                    CLASSES: np.asarray([[c.label for c in r.classes] for r in results], object)}
        return signature, _examples(entry.request.input), response
    if kind == "regress_log":
        response = {OUTPUTS: np.asarray([r.value for r in entry.response.result.regressions], np.float32)}
        return signature, _examples(entry.request.input), response
    return None


def _examples(request_input) -> dict[str, np.ndarray]:
    """The features of a Classify/Regress request's examples as [examples, values] arrays."""
    which = request_input.WhichOneof("kind")
    if which == "example_list":
        examples = list(request_input.example_list.examples)
    elif which == "example_list_with_context":
        context = request_input.example_list_with_context.context
        examples = []
        for example in request_input.example_list_with_context.examples:
            merged = type(example)()
            merged.CopyFrom(context)
            merged.MergeFrom(example)
            examples.append(merged)
    else:
        return {}
    columns: dict[str, list] = {}
    for example in examples:
        for name, feature in example.features.feature.items():
            values = getattr(feature, feature.WhichOneof("kind") or "float_list").value
            columns.setdefault(name, []).append(list(values))
    return {name: np.asarray(rows) for name, rows in columns.items()
            if len(rows) == len(examples) and len({len(r) for r in rows}) == 1}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


DERIVED = {
    "argmax": lambda v: np.asarray(v).argmax(axis=-1),
    "max_softmax": lambda v: _softmax(np.asarray(v, np.float64)).max(axis=-1),
    "softmax": lambda v: _softmax(np.asarray(v, np.float64)),
    "utf8_bytes": lambda v: np.vectorize(len, otypes=[np.int64])(v) if np.size(v) else np.zeros(0, np.int64),
}


def feature_values(feature: dict, tensors: dict) -> np.ndarray | None:
    """The values of `feature` in one record's request or response `tensors`, or None when
    the record does not hold it (another signature, another input, too few elements)."""
    value = tensors.get(feature.get("tensor"))
    if value is None:
        return None
    derived = feature.get("derived")
    if derived is not None:
        if derived not in DERIVED:
            return None
        value = DERIVED[derived](value)
    value = np.asarray(value)
    element = feature.get("element")
    if element is None or element == "*":
        return value.ravel()
    rows = value.reshape(len(value), -1) if value.ndim > 1 else value.reshape(-1, 1)
    if not isinstance(element, int) or element >= rows.shape[1]:
        return None
    return rows[:, element]


class FeatureCounts:
    """Traffic values of one feature counted into the reference's buckets, plus one bucket
    for values that are NaN or infinite (numeric features)."""

    def __init__(self, feature: dict):
        self.kind = feature["kind"]
        self._edges = feature.get("bin_edges")
        self._categories = feature.get("categories")
        buckets = len(self._edges) + 1 if self.kind == "numeric" else len(self._categories) + 1
        self._counts = np.zeros(buckets + 1, np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_size = 0

    def add(self, values: np.ndarray) -> None:
        self._pending.append(values)
        self._pending_size += values.size
        if self._pending_size >= PENDING_VALUES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        values = np.concatenate([np.asarray(v).ravel() for v in self._pending])
        self._pending, self._pending_size = [], 0
        if self.kind == "numeric":
            numbers = values.astype(np.float64)
            self._counts[:-1] += histogram(numbers, self._edges)
            self._counts[-1] += int(np.sum(~np.isfinite(numbers)))
        else:
            self._counts[:-1] += category_counts(values, self._categories)

    @property
    def counts(self) -> np.ndarray:
        """Bucket counts: the reference's buckets, then the non-finite values."""
        self._flush()
        return self._counts.copy()


def reference_counts(feature: dict, split: dict) -> np.ndarray:
    """A reference split's counts laid out as FeatureCounts lays out traffic's."""
    counts = split["histogram"] if feature["kind"] == "numeric" else split["counts"]
    return np.asarray(list(counts) + [split.get("non_finite", 0)], np.int64)

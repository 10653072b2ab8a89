"""One loaded version of one model: its SignatureDefs and how to run them.

Requests are checked against the SignatureDef before TensorFlow sees them, so
a wrong input name, dtype or shape comes back as INVALID_ARGUMENT naming the
input, as TF Serving does, instead of an error from deep inside a graph.
"""

from __future__ import annotations

import os
import re

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import classification_pb2, regression_pb2

from tfbig import saved_model
from tfbig.protocol import (
    CLASSES, DEFAULT_SIGNATURE, GENERATE_NEXT_FUNCTION, GENERATE_START_FUNCTION, OUTPUTS, SCORES,
)
from tfbig.serving import codec
from tfbig.serving.errors import ServingError, invalid_argument
from tfbig.serving.options import SERVE_TAG
from tfbig.serving.server.inputs import InputSpec, check_names, check_shape

_CODES = {code.value[0]: code for code in grpc.StatusCode}
# TensorFlow prefixes errors raised inside a tf.function with the function's generated name,
# which tells a client nothing ("{{function_node __inference_<lambda>_18670}} assertion failed: ...").
_FUNCTION_NODE = re.compile(r"^\{\{function_node [^}]*\}\}\s*")


def op_error(error: tf.errors.OpError) -> ServingError:
    """A TensorFlow error from inside a model as the status a client gets: its code, and the
    first line of its message without the function's generated name."""
    return ServingError(_CODES.get(error.error_code, grpc.StatusCode.UNKNOWN),
                        _FUNCTION_NODE.sub("", error.message.split("\n")[0]))


def read_signature_defs(path: str, tags: frozenset[str]) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the MetaGraph tagged exactly `tags`, as TF Serving's metadata API
    reports them. Its loader wants the same tag set, not one that includes it (reader.cc)."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == tags:
            return dict(meta_graph.signature_def)
    available = ["{ " + " ".join(sorted(graph.meta_info_def.tags)) + " }" for graph in saved_model.meta_graphs]
    raise ServingError(grpc.StatusCode.NOT_FOUND,
                       f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(tags))} }}. "
                       f"The SavedModel's tag sets: {', '.join(available) or 'none'} (pick one with --saved_model_tags)")


def _graph_function(function, flat_specs: list):
    """`function` of flat tensors traced once: (its graph function, the captured handles to
    pass after the inputs)."""
    traced = tf.function(function, input_signature=flat_specs).get_concrete_function()
    return traced.inference_fn, list(traced.captured_inputs)


def direct_call(signature):
    """The signature traced once into a function of its own, called with flat tensors.

    A restored signature looks up every captured variable's handle and binds its
    arguments on each call; the traced one holds the handles, which takes about a fifth
    off a small model's call. Calling its graph function (`inference_fn`) with the input
    tensors followed by those handles also skips binding and casting the arguments to the
    input signature, another 50-80 us a call: `Servable.check_inputs` has already checked
    names, dtypes and shapes, so there is nothing left to cast."""
    specs = signature.structured_input_signature[1]
    names = sorted(specs)
    graph_function, captures = _graph_function(lambda *tensors: signature(**dict(zip(names, tensors))),
                                                [specs[name] for name in names])
    return lambda **tensors: graph_function.call_preflattened([*(tensors[name] for name in names), *captures])


def direct_nested_call(function):
    """`direct_call` for a restored tf.function whose input_signature nests (a stream's state):
    called with positional arguments of that structure. Besides its speed (a stream step of a
    small GPT took 0.8 ms instead of 1.9), its errors read as a signature's do, where the
    restored function's errors begin with "Graph execution error:" and a stack trace."""
    specs = function.input_signature
    graph_function, captures = _graph_function(
        lambda *flat: function(*tf.nest.pack_sequence_as(specs, flat)), tf.nest.flatten(specs))
    return lambda *arguments: graph_function.call_preflattened([*tf.nest.flatten(arguments), *captures])


class Servable:
    """A SavedModel version loaded for serving."""

    def __init__(self, name: str, version: int, path: str, tags: frozenset[str] = frozenset([SERVE_TAG])):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = read_signature_defs(path, tags)
        self._input_specs = {name: {input_name: InputSpec.of(info) for input_name, info in signature.inputs.items()}
                             for name, signature in self.signature_defs.items()}
        # Batching needs every input to have an open first (batch) dimension.
        self._batchable = {name: all(spec.dims and spec.dims[0] == -1 for spec in specs.values())
                           for name, specs in self._input_specs.items()}
        loaded = saved_model.load(path, tags=sorted(tags))
        self._loaded = loaded  # keeps the functions' variables alive
        self._functions = {name: direct_call(function) for name, function in loaded.signatures.items()}
        functions = [getattr(loaded, name, None) for name in (GENERATE_START_FUNCTION, GENERATE_NEXT_FUNCTION)]
        self._stream = tuple(direct_nested_call(f) for f in functions) if None not in functions else None

    def signature_def(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self._functions:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"Serving signature key \"{name}\" not found.")
        return self.signature_defs[name]

    def batchable(self, signature_name: str) -> bool:
        """Whether requests for this signature may be joined into batches (every input has an
        open first dimension); looked up on every request, so decided once at load."""
        return self._batchable[signature_name or DEFAULT_SIGNATURE]

    def input_specs(self, signature_name: str) -> dict[str, InputSpec]:
        """What the signature takes, by input name; FAILED_PRECONDITION for an unknown signature."""
        self.signature_def(signature_name)
        return self._input_specs[signature_name or DEFAULT_SIGNATURE]

    def check_inputs(self, signature_name: str, inputs: dict[str, np.ndarray], max_rows: int = 0) -> None:
        """Names, dtypes and shapes as the SignatureDef declares; at most `max_rows` rows (0: any)."""
        specs = self.input_specs(signature_name)
        signature = signature_name or DEFAULT_SIGNATURE
        check_names(signature, specs, inputs)
        for name, value in inputs.items():
            spec = specs[name]
            if not spec.accepts_dtype(value.dtype):
                raise invalid_argument(
                    f"input '{name}' is {value.dtype.name if value.dtype.kind != 'O' else 'string'} but "
                    f"signature '{signature}' expects {codec.dtype_name(spec.dtype_enum)}")
            check_shape(name, signature, spec, value.shape)
            if max_rows and value.ndim and value.shape[0] > max_rows:
                raise invalid_argument(
                    f"input '{name}' has {value.shape[0]} rows; this server accepts at most "
                    f"{max_rows} per request (--max_request_batch_size)")

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a signature on already-checked inputs."""
        function = self._functions[signature_name or DEFAULT_SIGNATURE]
        try:
            outputs = function(**{name: tf.constant(value) for name, value in inputs.items()})
        except tf.errors.OpError as error:
            raise op_error(error) from None
        return {name: value.numpy() for name, value in outputs.items()}

    @property
    def streams(self) -> bool:
        """Whether the SavedModel has the functions of a stream (tfbig.export.stream)."""
        return self._stream is not None

    def stream_functions(self) -> tuple:
        """(generate_start, generate_next), FAILED_PRECONDITION for a model without them."""
        if not self.streams:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, (
                f"version {self.version} of model {self.name} cannot stream: its SavedModel has no "
                f"{GENERATE_START_FUNCTION}/{GENERATE_NEXT_FUNCTION} functions (tfbig exports them for a GPT; export "
                f"an older version again to add them)"))
        return self._stream


def classification_result(outputs: dict[str, np.ndarray], rows: int) -> classification_pb2.ClassificationResult:
    """TF Serving's classify semantics: `classes` (labels) and/or `scores`, one column per class."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    if classes is None and scores is None:
        raise invalid_argument("classify signature has neither a 'classes' nor a 'scores' output")
    result = classification_pb2.ClassificationResult()
    columns = (classes if classes is not None else scores).reshape(rows, -1).shape[1]
    for row in range(rows):
        classifications = result.classifications.add()
        for column in range(columns):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = classes.reshape(rows, -1)[row, column].decode("utf-8", "replace")
            if scores is not None:
                entry.score = float(scores.reshape(rows, -1)[row, column])
    return result


def regression_result(outputs: dict[str, np.ndarray], rows: int) -> regression_pb2.RegressionResult:
    if OUTPUTS not in outputs:
        raise invalid_argument("regress signature has no 'outputs' output")
    values = outputs[OUTPUTS].reshape(rows, -1)
    if values.shape[1] != 1:
        raise invalid_argument(f"regress 'outputs' must hold one value per example, got {values.shape[1]}")
    result = regression_pb2.RegressionResult()
    for value in values[:, 0]:
        result.regressions.add(value=float(value))
    return result

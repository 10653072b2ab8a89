"""Running one request on one loaded version: the part of serving that needs no model lookup.

`SignatureRunner` checks a request's inputs against the version's signature,
sends them through the version's batcher (or runs them at once) and turns
Classify, Regress and MultiInference requests into signature calls. The model
manager needs it before any version is AVAILABLE, to replay warmup records,
and `ServingCore` needs the manager to find versions: so the runner is built
first, the manager with it, and the core from both.
"""

from __future__ import annotations

import os

import numpy as np
from tensorflow_serving.apis import classification_pb2, inference_pb2, model_pb2, regression_pb2

from tfbig.export.signatures import GENERATE
from tfbig.export.warmup import WARMUP_FILE, read_warmup
from tfbig.protocol import CLASSIFY_METHOD, REGRESS_METHOD
from tfbig.serving import codec
from tfbig.serving.errors import deadline_exceeded, invalid_argument
from tfbig.serving.server.inputs import InputBudget
from tfbig.serving.server.servable import (
    DEFAULT_SIGNATURE, Servable, classification_result, regression_result,
)
from tfbig.serving.server.streaming import warm_stream

# Passed as the batcher by warmup replay: no batching and no per-request row limit.
WARMUP = object()


def serialized_examples(request_input) -> np.ndarray:
    """Examples as serialized strings; context features are merged in the way TF Serving
    does it: a context's bytes followed by an example's parse as their merge, the
    example's own features winning."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        context = request_input.example_list_with_context.context.SerializeToString()
        serialized = [context + e.SerializeToString()
                      for e in request_input.example_list_with_context.examples]
    else:
        raise invalid_argument("Input is empty")
    if not serialized:
        raise invalid_argument("Input is empty")
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return array


def response_spec(spec: model_pb2.ModelSpec, version: int, signature: str) -> model_pb2.ModelSpec:
    out = model_pb2.ModelSpec(name=spec.name, signature_name=signature or DEFAULT_SIGNATURE)
    out.version.value = version
    return out


class SignatureRunner:
    """Run requests on a given version (a Servable and its batcher, None: unbatched)."""

    def __init__(self, *, max_tensor_bytes: int, warmup_iterations: int = 1,
                 max_request_batch_size: int = 0):
        self._max_tensor_bytes = max_tensor_bytes
        self._warmup_iterations = warmup_iterations
        self._max_rows = max_request_batch_size  # clients' limit; warmup records are trusted

    def budget(self) -> InputBudget:
        """What one request's inputs may take once decoded."""
        return InputBudget(self._max_tensor_bytes)

    def run(self, servable: Servable, batcher, signature: str, inputs: dict, timeout: float | None) -> dict:
        if timeout is not None and timeout <= 0:  # its caller gave up waiting, in a queue before us
            raise deadline_exceeded()
        servable.check_inputs(signature, inputs, self._max_rows if batcher is not WARMUP else 0)
        batcher = None if batcher is WARMUP else batcher
        if batcher is None or not servable.batchable(signature):
            return servable.run(signature, inputs)
        return batcher.submit(signature or DEFAULT_SIGNATURE, inputs).result(timeout)

    def _examples_output(self, servable: Servable, batcher, signature: str, request_input, timeout):
        examples = serialized_examples(request_input)
        signature_def = servable.signature_def(signature)
        if len(signature_def.inputs) != 1:
            raise invalid_argument(f"signature '{signature or DEFAULT_SIGNATURE}' takes "
                                   f"{len(signature_def.inputs)} inputs; classify and regress need one")
        name = next(iter(signature_def.inputs))
        return self.run(servable, batcher, signature, {name: examples}, timeout), len(examples)

    def classify(self, servable, batcher, request, timeout=None):
        outputs, rows = self._examples_output(servable, batcher, request.model_spec.signature_name,
                                              request.input, timeout)
        return classification_result(outputs, rows)

    def regress(self, servable, batcher, request, timeout=None):
        outputs, rows = self._examples_output(servable, batcher, request.model_spec.signature_name,
                                              request.input, timeout)
        return regression_result(outputs, rows)

    def multi_inference(self, servable, batcher, request, timeout=None):
        if not request.tasks:
            raise invalid_argument("MultiInferenceRequest must have at least one task")
        names = {task.model_spec.name for task in request.tasks}
        if len(names) != 1:
            raise invalid_argument("All tasks of a MultiInferenceRequest must use the same model")
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            result = response.results.add()
            result.model_spec.CopyFrom(response_spec(task.model_spec, servable.version,
                                                      task.model_spec.signature_name))
            if task.method_name == CLASSIFY_METHOD:
                sub = classification_pb2.ClassificationRequest(model_spec=task.model_spec, input=request.input)
                result.classification_result.CopyFrom(self.classify(servable, batcher, sub, timeout))
            elif task.method_name == REGRESS_METHOD:
                sub = regression_pb2.RegressionRequest(model_spec=task.model_spec, input=request.input)
                result.regression_result.CopyFrom(self.regress(servable, batcher, sub, timeout))
            else:
                raise invalid_argument(f"Unsupported signature method_name: {task.method_name}")
        return response

    def warmup(self, servable: Servable) -> None:
        """Replay the version's warmup records before it is made AVAILABLE, as TF Serving does;
        a `generate` record is streamed too, for the stream functions' first call."""
        path = os.path.join(servable.path, WARMUP_FILE)
        if not os.path.exists(path):
            return
        for log in read_warmup(path):
            kind = log.WhichOneof("log_type")
            for _ in range(self._warmup_iterations):
                if kind == "predict_log":
                    request = log.predict_log.request
                    inputs = {n: codec.from_tensor_proto(p) for n, p in request.inputs.items()}
                    self.run(servable, WARMUP, request.model_spec.signature_name, inputs, None)
                    if request.model_spec.signature_name == GENERATE and servable.streams:
                        warm_stream(servable, inputs)
                elif kind == "classify_log":
                    self.classify(servable, WARMUP, log.classify_log.request)
                elif kind == "regress_log":
                    self.regress(servable, WARMUP, log.regress_log.request)
                elif kind == "multi_inference_log":
                    self.multi_inference(servable, WARMUP, log.multi_inference_log.request)
                else:
                    raise invalid_argument(f"unsupported warmup record type {kind!r} in {path}")

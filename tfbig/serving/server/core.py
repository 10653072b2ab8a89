"""The embedded server's request handling, on TF Serving's protos.

gRPC and REST both end here, as in TF Serving (its REST handler builds the
same PredictRequest/ClassificationRequest protos and calls the same code), so
the two protocols cannot drift apart in behaviour or error codes.
"""

from __future__ import annotations

import logging
import os
import uuid

import grpc
import numpy as np
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2, model_management_pb2,
    model_pb2, predict_pb2, regression_pb2, status_pb2,
)

from tfbig.export.signatures import GENERATE
from tfbig.export.warmup import WARMUP_FILE, read_warmup
from tfbig.protocol import CLASSIFY_METHOD, REGRESS_METHOD, SIGNATURE_DEF_FIELD
from tfbig.serving import codec
from tfbig.serving.errors import ServingError, deadline_exceeded, invalid_argument
from tfbig.serving.server.inputs import InputBudget, check_names, tensor_input
from tfbig.serving.server.models import ModelManager
from tfbig.serving.server.servable import (
    DEFAULT_SIGNATURE, Servable, classification_result, regression_result,
)
from tfbig.serving.server.streaming import warm_stream

log = logging.getLogger("tfbig.serving")

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


def server_fault(api: str, error: Exception) -> ServingError:
    """A request that failed through no fault of its own: the traceback goes to the server's
    log under an incident id, the client gets INTERNAL with that id and nothing of the
    exception (it counts in request_count{status="INTERNAL"})."""
    incident = uuid.uuid4().hex[:12]
    log.error("%s failed (incident %s)", api or "request", incident, exc_info=error)
    return ServingError(grpc.StatusCode.INTERNAL,
                        f"internal server error (incident {incident} in the server's log)")


def require_model_spec(request) -> None:
    """TF Serving refuses a request whose model_spec is unset before it looks for a model
    (predict_impl.cc, classification_service.cc, regression_service.cc,
    get_model_metadata_impl.cc, get_model_status_impl.cc). One that is set but names no
    model is refused later, by the model lookup (GetModelStatus: not found)."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")


def _response_spec(spec: model_pb2.ModelSpec, version: int, signature: str) -> model_pb2.ModelSpec:
    out = model_pb2.ModelSpec(name=spec.name, signature_name=signature or DEFAULT_SIGNATURE)
    out.version.value = version
    return out


def predict_response(spec: model_pb2.ModelSpec, outputs: dict) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse(model_spec=spec)
    for name, value in outputs.items():
        codec.to_tensor_proto(value, out=response.outputs[name])
    return response


class ServingCore:
    """Predict, Classify, Regress, MultiInference, metadata, status and config reload."""

    def __init__(self, manager: ModelManager, *, max_tensor_bytes: int, warmup_iterations: int = 1,
                 max_request_batch_size: int = 0):
        self.manager = manager
        self._max_tensor_bytes = max_tensor_bytes
        self._warmup_iterations = warmup_iterations
        self._max_rows = max_request_batch_size  # clients' limit; warmup records are trusted

    # --- running signatures ----------------------------------------------------

    def _run(self, servable: Servable, batcher, signature: str, inputs: dict, timeout: float | None) -> dict:
        if timeout is not None and timeout <= 0:  # its caller gave up waiting, in a queue before us
            raise deadline_exceeded()
        servable.check_inputs(signature, inputs, self._max_rows if batcher is not WARMUP else 0)
        batcher = None if batcher is WARMUP else batcher
        if batcher is None or not servable.batchable(signature):
            return servable.run(signature, inputs)
        return batcher.submit(signature or DEFAULT_SIGNATURE, inputs).result(timeout)

    def budget(self) -> InputBudget:
        """What one request's inputs may take once decoded."""
        return InputBudget(self._max_tensor_bytes)

    def run_predict(self, spec: model_pb2.ModelSpec, decode_inputs, *, output_filter=(),
                    timeout: float | None = None):
        """Returns (response model spec, outputs). `decode_inputs(servable, signature name)` builds
        the named arrays against the signature of the version that will run them."""
        with self.manager.acquire(spec) as entry:
            inputs = decode_inputs(entry.servable, spec.signature_name or DEFAULT_SIGNATURE)
            outputs = self._run(entry.servable, entry.batcher, spec.signature_name, inputs, timeout)
            version = entry.version
        if output_filter:
            missing = [name for name in output_filter if name not in outputs]
            if missing:
                raise invalid_argument(f"output tensor alias not found in signature: {missing[0]}")
            outputs = {name: outputs[name] for name in output_filter}
        return _response_spec(spec, version, spec.signature_name), outputs

    def predict(self, request: predict_pb2.PredictRequest, timeout: float | None = None):
        require_model_spec(request)

        def decode(servable: Servable, signature: str) -> dict:
            specs = servable.input_specs(signature)  # FAILED_PRECONDITION for an unknown signature
            check_names(signature, specs, request.inputs)
            budget = self.budget()
            return {name: tensor_input(name, proto, specs[name], signature, budget)
                    for name, proto in request.inputs.items()}

        spec, outputs = self.run_predict(request.model_spec, decode,
                                         output_filter=list(request.output_filter), timeout=timeout)
        return predict_response(spec, outputs)

    def _examples_output(self, servable: Servable, batcher, signature: str, request_input, timeout):
        examples = serialized_examples(request_input)
        signature_def = servable.signature_def(signature)
        if len(signature_def.inputs) != 1:
            raise invalid_argument(f"signature '{signature or DEFAULT_SIGNATURE}' takes "
                                   f"{len(signature_def.inputs)} inputs; classify and regress need one")
        name = next(iter(signature_def.inputs))
        return self._run(servable, batcher, signature, {name: examples}, timeout), len(examples)

    def _classify_on(self, servable, batcher, request, timeout=None):
        outputs, rows = self._examples_output(servable, batcher, request.model_spec.signature_name,
                                              request.input, timeout)
        return classification_result(outputs, rows)

    def _regress_on(self, servable, batcher, request, timeout=None):
        outputs, rows = self._examples_output(servable, batcher, request.model_spec.signature_name,
                                              request.input, timeout)
        return regression_result(outputs, rows)

    def classify(self, request: classification_pb2.ClassificationRequest, timeout: float | None = None):
        require_model_spec(request)
        with self.manager.acquire(request.model_spec) as entry:
            result = self._classify_on(entry.servable, entry.batcher, request, timeout)
            spec = _response_spec(request.model_spec, entry.version, request.model_spec.signature_name)
        return classification_pb2.ClassificationResponse(model_spec=spec, result=result)

    def regress(self, request: regression_pb2.RegressionRequest, timeout: float | None = None):
        require_model_spec(request)
        with self.manager.acquire(request.model_spec) as entry:
            result = self._regress_on(entry.servable, entry.batcher, request, timeout)
            spec = _response_spec(request.model_spec, entry.version, request.model_spec.signature_name)
        return regression_pb2.RegressionResponse(model_spec=spec, result=result)

    def _multi_inference_on(self, servable, batcher, request, timeout=None):
        if not request.tasks:
            raise invalid_argument("MultiInferenceRequest must have at least one task")
        names = {task.model_spec.name for task in request.tasks}
        if len(names) != 1:
            raise invalid_argument("All tasks of a MultiInferenceRequest must use the same model")
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            result = response.results.add()
            result.model_spec.CopyFrom(_response_spec(task.model_spec, servable.version,
                                                      task.model_spec.signature_name))
            if task.method_name == CLASSIFY_METHOD:
                sub = classification_pb2.ClassificationRequest(model_spec=task.model_spec, input=request.input)
                result.classification_result.CopyFrom(self._classify_on(servable, batcher, sub, timeout))
            elif task.method_name == REGRESS_METHOD:
                sub = regression_pb2.RegressionRequest(model_spec=task.model_spec, input=request.input)
                result.regression_result.CopyFrom(self._regress_on(servable, batcher, sub, timeout))
            else:
                raise invalid_argument(f"Unsupported signature method_name: {task.method_name}")
        return response

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest, timeout: float | None = None):
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        with self.manager.acquire(spec) as entry:
            return self._multi_inference_on(entry.servable, entry.batcher, request, timeout)

    # --- warmup ----------------------------------------------------------------

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
                    self._run(servable, WARMUP, request.model_spec.signature_name, inputs, None)
                    if request.model_spec.signature_name == GENERATE and servable.streams:
                        warm_stream(servable, inputs)
                elif kind == "classify_log":
                    self._classify_on(servable, WARMUP, log.classify_log.request)
                elif kind == "regress_log":
                    self._regress_on(servable, WARMUP, log.regress_log.request)
                elif kind == "multi_inference_log":
                    self._multi_inference_on(servable, WARMUP, log.multi_inference_log.request)
                else:
                    raise invalid_argument(f"unsupported warmup record type {kind!r} in {path}")

    # --- model service ---------------------------------------------------------

    def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest):
        require_model_spec(request)
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field} is not supported")
        with self.manager.acquire(request.model_spec) as entry:
            signatures = get_model_metadata_pb2.SignatureDefMap(signature_def=entry.servable.signature_defs)
            version = entry.version
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        packed = any_pb2.Any()
        packed.Pack(signatures)
        response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(packed)
        return response

    def status(self, request: get_model_status_pb2.GetModelStatusRequest):
        require_model_spec(request)
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in self.manager.status(request.model_spec):
            status = response.model_version_status.add(version=entry.version, state=entry.state)
            status.status.SetInParent()  # TF Serving always reports a status, OK included
            if entry.error is not None:
                status.status.error_code = entry.error.code.value[0]
                status.status.error_message = entry.error.message
        return response

    def reload_config(self, request: model_management_pb2.ReloadConfigRequest):
        if request.config.WhichOneof("config") != "model_config_list":
            raise invalid_argument("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                   "Only ModelConfigList is currently supported")
        self.manager.apply_config(request.config)
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto())

"""The embedded server's request handling, on TF Serving's protos.

gRPC and REST both end here, as in TF Serving (its REST handler builds the
same PredictRequest/ClassificationRequest protos and calls the same code), so
the two protocols cannot drift apart in behaviour or error codes.
"""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2, model_management_pb2,
    model_pb2, predict_pb2, regression_pb2, status_pb2,
)

from tfbig.protocol import SIGNATURE_DEF_FIELD
from tfbig.serving import codec
from tfbig.serving.errors import ServingError, invalid_argument
from tfbig.serving.server.inputs import InputBudget, check_names, tensor_input
from tfbig.serving.server.models import ModelManager
from tfbig.serving.server.runner import SignatureRunner, response_spec
from tfbig.serving.server.servable import DEFAULT_SIGNATURE, Servable

log = logging.getLogger("tfbig.serving")

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


def predict_response(spec: model_pb2.ModelSpec, outputs: dict) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse(model_spec=spec)
    for name, value in outputs.items():
        codec.to_tensor_proto(value, out=response.outputs[name])
    return response


class ServingCore:
    """Predict, Classify, Regress, MultiInference, metadata, status and config reload."""

    def __init__(self, manager: ModelManager, runner: SignatureRunner):
        self.manager = manager
        self.runner = runner

    def budget(self) -> InputBudget:
        """What one request's inputs may take once decoded."""
        return self.runner.budget()


    def run_predict(self, spec: model_pb2.ModelSpec, decode_inputs, *, output_filter=(),
                    timeout: float | None = None):
        """Returns (response model spec, outputs). `decode_inputs(servable, signature name)` builds
        the named arrays against the signature of the version that will run them."""
        with self.manager.acquire(spec) as entry:
            inputs = decode_inputs(entry.servable, spec.signature_name or DEFAULT_SIGNATURE)
            outputs = self.runner.run(entry.servable, entry.batcher, spec.signature_name, inputs, timeout)
            version = entry.version
        if output_filter:
            missing = [name for name in output_filter if name not in outputs]
            if missing:
                raise invalid_argument(f"output tensor alias not found in signature: {missing[0]}")
            outputs = {name: outputs[name] for name in output_filter}
        return response_spec(spec, version, spec.signature_name), outputs

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

    def classify(self, request: classification_pb2.ClassificationRequest, timeout: float | None = None):
        require_model_spec(request)
        with self.manager.acquire(request.model_spec) as entry:
            result = self.runner.classify(entry.servable, entry.batcher, request, timeout)
            spec = response_spec(request.model_spec, entry.version, request.model_spec.signature_name)
        return classification_pb2.ClassificationResponse(model_spec=spec, result=result)

    def regress(self, request: regression_pb2.RegressionRequest, timeout: float | None = None):
        require_model_spec(request)
        with self.manager.acquire(request.model_spec) as entry:
            result = self.runner.regress(entry.servable, entry.batcher, request, timeout)
            spec = response_spec(request.model_spec, entry.version, request.model_spec.signature_name)
        return regression_pb2.RegressionResponse(model_spec=spec, result=result)

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest, timeout: float | None = None):
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        with self.manager.acquire(spec) as entry:
            return self.runner.multi_inference(entry.servable, entry.batcher, request, timeout)

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

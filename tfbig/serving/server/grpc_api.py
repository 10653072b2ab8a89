"""TF Serving's gRPC services (PredictionService, ModelService) over grpcio.

The servicers are thin: each RPC is handed to the shared ServingCore with the
client's remaining deadline, and a ServingError becomes the same status code
and message TF Serving would send.

Requests arrive as bytes and are parsed here, not by grpcio: grpcio answers a
message that does not parse with INTERNAL "Exception deserializing request!",
which blames the server for the client's bytes; parsed here, it is
INVALID_ARGUMENT naming the message type, and counted like any other request.
A request the request log samples is handed to it with its outcome and latency.
"""

from __future__ import annotations

import threading
import time

import grpc
from google.protobuf import message, message_factory
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

from tfbig.serving.errors import ServingError, invalid_argument
from tfbig.serving.server.core import ServingCore, server_fault
from tfbig.serving.server.metrics import ServerMetrics
from tfbig.serving.server.request_logger import RequestLogger


def time_remaining(context: grpc.ServicerContext) -> float | None:
    """Seconds left before the client's deadline, or None when it set none: grpc then
    reports 9.2e18 s, longer than a lock can wait for (threading.TIMEOUT_MAX)."""
    remaining = context.time_remaining()
    return None if remaining >= threading.TIMEOUT_MAX else remaining


def _model_name(request) -> str:
    """The model a request names, for the metrics' model_name label."""
    if hasattr(request, "tasks"):  # MultiInference: every task names the same model
        return request.tasks[0].model_spec.name if request.tasks else ""
    return request.model_spec.name if hasattr(request, "model_spec") else ""


class _Service:
    """One gRPC service: its methods take the request's bytes (see the module docstring)."""

    descriptor = None  # the service's ServiceDescriptor

    def __init__(self, core: ServingCore, metrics: ServerMetrics, request_log: RequestLogger | None = None):
        self._core = core
        self._metrics = metrics
        self._request_log = request_log
        self._request_types = {method.name: message_factory.GetMessageClass(method.input_type)
                               for method in self.descriptor.methods}

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {method.name: grpc.unary_unary_rpc_method_handler(
            self._rpc(method.name),
            response_serializer=message_factory.GetMessageClass(method.output_type).SerializeToString)
            for method in self.descriptor.methods}
        return grpc.method_handlers_generic_handler(self.descriptor.full_name, methods)

    def _rpc(self, api: str):
        request_type, run = self._request_types[api], getattr(self, api)

        def call(raw: bytes, context: grpc.ServicerContext):
            """One RPC; `api` is its method name, the API label TF Serving gives its latency."""
            start = time.perf_counter()
            code, text, model_name, sample = grpc.StatusCode.OK, "", "", None
            try:
                try:
                    request = request_type.FromString(raw)
                except message.DecodeError:
                    raise invalid_argument(f"the request is not a valid {request_type.DESCRIPTOR.name}") from None
                model_name = _model_name(request)
                if self._request_log is not None and (sample := self._request_log.sample(api, model_name)):
                    sample.request, sample.size = request, len(raw)
                response = run(request, context)
                if sample is not None:
                    sample.response = response
                return response
            except ServingError as error:
                code, text = error.code, error.message
            except Exception as error:  # a fault of the server's answers INTERNAL, not a dropped connection
                fault = server_fault(api, error)
                code, text = fault.code, fault.message
            finally:
                seconds = time.perf_counter() - start
                self._metrics.record(model_name, api, "GRPC", code, seconds)
                if sample is not None:
                    self._request_log.submit(sample, code, text, seconds, "GRPC")
            context.abort(code, text)

        return call


class PredictionService(_Service):
    descriptor = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]

    def Predict(self, request, context):
        return self._core.predict(request, time_remaining(context))

    def Classify(self, request, context):
        return self._core.classify(request, time_remaining(context))

    def Regress(self, request, context):
        return self._core.regress(request, time_remaining(context))

    def MultiInference(self, request, context):
        return self._core.multi_inference(request, time_remaining(context))

    def GetModelMetadata(self, request, context):
        return self._core.metadata(request)


class ModelService(_Service):
    descriptor = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]

    def GetModelStatus(self, request, context):
        return self._core.status(request)

    def HandleReloadConfigRequest(self, request, context):
        return self._core.reload_config(request)


def add_services(server: grpc.Server, core: ServingCore, metrics: ServerMetrics,
                 request_log: RequestLogger | None = None) -> None:
    server.add_generic_rpc_handlers([PredictionService(core, metrics, request_log).handler(),
                                     ModelService(core, metrics).handler()])

"""TF Serving's gRPC services (PredictionService, ModelService) over grpcio.

The servicers are thin: each RPC is handed to the shared ServingCore with the
client's remaining deadline, and a ServingError becomes the same status code
and message TF Serving would send.
"""

from __future__ import annotations

import threading
import time

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from tfbig.serving.errors import ServingError
from tfbig.serving.server.core import ServingCore, server_fault
from tfbig.serving.server.metrics import ServerMetrics


def time_remaining(context: grpc.ServicerContext) -> float | None:
    """Seconds left before the client's deadline, or None when it set none: grpc then
    reports 9.2e18 s, longer than a lock can wait for (threading.TIMEOUT_MAX)."""
    remaining = context.time_remaining()
    return None if remaining >= threading.TIMEOUT_MAX else remaining


class _Handler:
    def __init__(self, core: ServingCore, metrics: ServerMetrics):
        self._core = core
        self._metrics = metrics

    def _call(self, api: str, model_name: str, context: grpc.ServicerContext, function, *args):
        """Runs one RPC; `api` is its method name, the API label TF Serving gives its latency."""
        start = time.perf_counter()
        code, message = grpc.StatusCode.OK, ""
        try:
            return function(*args)
        except ServingError as error:
            code, message = error.code, error.message
        except Exception as error:  # a fault of the server's answers INTERNAL, not a dropped connection
            fault = server_fault(api, error)
            code, message = fault.code, fault.message
        finally:
            self._metrics.record(model_name, api, "GRPC", code, time.perf_counter() - start)
        context.abort(code, message)


class PredictionService(_Handler, prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):
        return self._call("Predict", request.model_spec.name, context, self._core.predict,
                          request, time_remaining(context))

    def Classify(self, request, context):
        return self._call("Classify", request.model_spec.name, context, self._core.classify,
                          request, time_remaining(context))

    def Regress(self, request, context):
        return self._call("Regress", request.model_spec.name, context, self._core.regress,
                          request, time_remaining(context))

    def MultiInference(self, request, context):
        name = request.tasks[0].model_spec.name if request.tasks else ""
        return self._call("MultiInference", name, context, self._core.multi_inference,
                          request, time_remaining(context))

    def GetModelMetadata(self, request, context):
        return self._call("GetModelMetadata", request.model_spec.name, context,
                          self._core.metadata, request)


class ModelService(_Handler, model_service_pb2_grpc.ModelServiceServicer):
    def GetModelStatus(self, request, context):
        return self._call("GetModelStatus", request.model_spec.name, context,
                          self._core.status, request)

    def HandleReloadConfigRequest(self, request, context):
        return self._call("HandleReloadConfigRequest", "", context, self._core.reload_config, request)


def add_services(server: grpc.Server, core: ServingCore, metrics: ServerMetrics) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core, metrics), server)

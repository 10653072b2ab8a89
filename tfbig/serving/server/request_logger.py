"""Which requests go to the request log, and what their records hold: the request threads' side.

The gRPC and REST handlers ask `sample(api, model_name)` once they know the
model, and hand a sampled request to `submit` with its outcome and latency
once it is answered. Only the sampling draw and a timestamp happen on the
request thread: the PredictionLog is built and serialized on the writer's
thread (log_writer.py), from the request and response protos, or, for REST,
from functions that build the PredictRequest/PredictResponse a gRPC client
would have sent and received out of the numpy arrays the request used.
Sampling is per model, re-read when the model config is reloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import threading
import time

import grpc
from tensorflow_serving.apis import inference_pb2, model_pb2, predict_pb2, prediction_log_pb2

from tfbig.protocol import DEFAULT_SIGNATURE
from tfbig.serving import codec
from tfbig.serving.logging_config import ModelLogging, check_flags, request_logging
from tfbig.serving.request_log import LOG_KINDS, RequestOutcome, outcome_bytes
from tfbig.serving.server.log_writer import LogWriter


@dataclasses.dataclass
class Sample:
    """A request chosen for the log. `request` and `response` are protos or functions that build
    them (on the writer thread); a failed request has no response."""

    kind: str  # the PredictionLog field: predict_log, classify_log, ...
    settings: ModelLogging
    request: object = None
    response: object = None
    size: int = 0  # the request's bytes as received: what bounds the memory of the writer's queue

    def name_model(self, spec: model_pb2.ModelSpec) -> None:
        """Log the model `spec` names (as it is when the record is built), unless the full
        request becomes known."""
        self.request = functools.partial(_bare_request, self.kind, spec)


# The request message of each kind of PredictionLog.
_REQUEST_TYPES = {kind: type(getattr(prediction_log_pb2.PredictionLog(), kind).request)
                  for kind in LOG_KINDS.values()}


def _bare_request(kind: str, spec: model_pb2.ModelSpec):
    request = _REQUEST_TYPES[kind]()
    if isinstance(request, inference_pb2.MultiInferenceRequest):
        request.tasks.add().model_spec.CopyFrom(spec)
    else:
        request.model_spec.CopyFrom(spec)
    return request


def predict_request(spec: model_pb2.ModelSpec, inputs: dict) -> predict_pb2.PredictRequest:
    """The PredictRequest a gRPC client sends for `inputs`: a REST request's equivalent."""
    request = predict_pb2.PredictRequest(model_spec=spec)
    for name, value in inputs.items():
        codec.to_tensor_proto(value, out=request.inputs[name])
    return request


def _built(value):
    return value() if callable(value) else value


def served_spec(request, response) -> model_pb2.ModelSpec:
    """The model_spec that served the request (the response's, which names the version), or the
    one it asked for when it failed; the signature named even when it was the default."""
    if response is not None and not isinstance(response, inference_pb2.MultiInferenceResponse):
        source = response.model_spec
    elif response is not None and response.results:
        source = response.results[0].model_spec
    elif isinstance(request, inference_pb2.MultiInferenceRequest):
        source = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
    else:
        source = request.model_spec
    spec = model_pb2.ModelSpec()
    spec.CopyFrom(source)
    spec.signature_name = spec.signature_name or DEFAULT_SIGNATURE
    return spec


class RequestLogger:
    """`current_config()` returns the served ModelServerConfig; the writer's counts go to `registry`."""

    def __init__(self, options, current_config, *, registry, saved_model_tags):
        check_flags(options)
        self._options = options
        self._current_config = current_config
        self._config = None
        self._models: dict[str, ModelLogging] = {}
        self._tags = sorted(saved_model_tags)
        self._order = threading.Lock()
        self._writer = LogWriter(max_file_bytes=options.request_log_max_file_bytes,
                                 max_total_bytes=options.request_log_max_total_bytes,
                                 max_file_seconds=options.request_log_max_file_seconds, registry=registry)

    def _logged(self) -> dict[str, ModelLogging]:
        config = self._current_config()
        if config is not self._config:  # reloaded: other models may be logged, or none
            self._models = request_logging(config, self._options)
            self._config = config
        return self._models

    def sample(self, api: str, model_name: str) -> Sample | None:
        """A Sample when this request of `api` (Predict, classify, ...) is to be logged."""
        kind = LOG_KINDS.get(api.lower())
        settings = self._logged().get(model_name) if kind else None
        if settings is None or (settings.rate < 1.0 and random.random() >= settings.rate):
            return None
        return Sample(kind, settings)

    def submit(self, sample: Sample, code: grpc.StatusCode, message: str, seconds: float,
               entrypoint: str) -> None:
        if sample.request is None:  # it never named a model the log could say it was for
            return
        with self._order:  # records enter the queue in time order, which read_logs relies on
            when = time.time()
            self._writer.submit(sample.settings.prefix, when,
                                functools.partial(self._record, sample, code, message, seconds, entrypoint, when),
                                sample.size)

    def _record(self, sample: Sample, code: grpc.StatusCode, message: str, seconds: float, entrypoint: str,
                when: float) -> bytes:
        request, response = _built(sample.request), _built(sample.response)
        log = prediction_log_pb2.PredictionLog()
        entry = getattr(log, sample.kind)
        entry.request.CopyFrom(request)
        if response is not None:
            entry.response.CopyFrom(response)
        metadata = log.log_metadata
        metadata.model_spec.CopyFrom(served_spec(request, response))
        metadata.sampling_config.CopyFrom(sample.settings.sampling)
        metadata.saved_model_tags.extend(self._tags)
        metadata.timestamp_secs = int(when)
        outcome = RequestOutcome(code=code.value[0], error_message=message, latency_micros=round(seconds * 1e6),
                                 entrypoint=entrypoint, timestamp_micros=round(when * 1e6))
        return log.SerializeToString() + outcome_bytes(outcome)

    def close(self) -> None:
        """Write every queued record and close the files (the server's drain calls it last)."""
        self._writer.close()

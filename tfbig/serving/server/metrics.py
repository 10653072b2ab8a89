"""Prometheus metrics with TF Serving's names, served at its monitoring path.

Dashboards and alerts built for `tensorflow_model_server` keep working: the
request counter is `:tensorflow:serving:request_count{model_name,status}` and
the latency histogram `:tensorflow:serving:request_latency{model_name,API,
entrypoint}` in microseconds, with TF Serving's label values (API `Predict`,
`Classify`, `Regress` over gRPC, `predict`... over REST) and its bucket bounds.
prometheus-client keeps the counts; the page is written as TF Serving's
prometheus_exporter.cc writes it, because prometheus-client's own page renames
every counter `..._total` and adds `..._created` series, which would break
queries such as `rate(:tensorflow:serving:request_count[1m])`. tfbig's
extensions count under its own prefix (`:tfbig:serving:generate_stream_tokens`,
`:tfbig:serving:auth_refusals`). Each server has
its own registry so two servers in one process (tests, benchmarks) do not share
counts.
"""

from __future__ import annotations

import math

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

# Model names come from requests, so each new one would be a new series held for the life of
# the process: past this many names, requests for models the server does not serve share one.
MAX_MODEL_NAMES = 128
OTHER_MODELS = "(other)"

# TF Serving's request_latency buckets (servables/tensorflow/util.cc): 10 us growing by 1.8, 33
# bounds (about 24 minutes), then +Inf.
LATENCY_BUCKETS_US = tuple(10 * 1.8 ** i for i in range(33))


def _bound(le: str) -> str:
    """A bucket bound as TF Serving writes it: absl's six significant digits, e.g. `1.27482e+06`."""
    value = float(le)
    return "+Inf" if math.isinf(value) else f"{value:.6g}"


def _escaped(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class ServerMetrics:
    """`is_served(name)` tells a served model's name from one a client made up (see MAX_MODEL_NAMES)."""

    def __init__(self, is_served=lambda name: True):
        self._is_served = is_served
        self._model_names: set[str] = set()
        self.registry = CollectorRegistry()
        self._requests = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.",
            ["model_name", "status"], registry=self.registry)
        self._latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_US, registry=self.registry)
        self._batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Rows per batch run by server-side batching, padding included.",
            ["model_name"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry)
        # tfbig's own: tokens computed for `:generate_stream` (a client that disconnects stops them).
        self._stream_tokens = Counter(
            ":tfbig:serving:generate_stream_tokens", "Tokens generated for :generate_stream requests.",
            ["model_name"], registry=self.registry)
        # tfbig's own: requests refused by --auth_token_file (entrypoint GRPC/REST, reason missing/invalid).
        self._auth_refusals = Counter(
            ":tfbig:serving:auth_refusals", "Requests refused for a missing or unaccepted bearer token.",
            ["entrypoint", "reason"], registry=self.registry)
        # Labelled series by label values: prometheus-client's labels() lookup costs more
        # than the update itself, and every request makes two.
        self._series: dict[tuple, object] = {}

    def _child(self, metric, *values: str):
        key = (metric, *values)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*values)
        return child

    def _model_label(self, model_name: str) -> str:
        if model_name in self._model_names:
            return model_name
        if len(self._model_names) < MAX_MODEL_NAMES or self._is_served(model_name):
            self._model_names.add(model_name)
            return model_name
        return OTHER_MODELS

    def record(self, model_name: str, api: str, entrypoint: str, code: grpc.StatusCode,
               seconds: float) -> None:
        """Count every request; time the successful ones (as TF Serving does)."""
        model_name = self._model_label(model_name)
        self._child(self._requests, model_name, code.name).inc()
        if code == grpc.StatusCode.OK:
            self._child(self._latency, model_name, api, entrypoint).observe(seconds * 1e6)

    def record_stream_token(self, model_name: str) -> None:
        self._child(self._stream_tokens, self._model_label(model_name)).inc()

    def record_auth_refusal(self, entrypoint: str, reason: str) -> None:
        self._child(self._auth_refusals, entrypoint, reason).inc()

    def record_batch(self, model_name: str, size: int) -> None:
        self._child(self._batch_size, model_name).observe(size)

    def exposition(self) -> bytes:
        """The metrics page in Prometheus' text format, as tensorflow_model_server writes it."""
        lines = []
        for metric in self.registry.collect():
            lines.append(f"# HELP {metric.name} {metric.documentation}")
            lines.append(f"# TYPE {metric.name} {metric.type}")
            for sample in metric.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = {**sample.labels}
                if "le" in labels:
                    labels["le"] = _bound(labels["le"])
                name = metric.name if metric.type == "counter" else sample.name
                value = int(sample.value) if sample.value.is_integer() else repr(sample.value)
                text = ",".join(f'{key}="{_escaped(label)}"' for key, label in labels.items())
                lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")
        return ("\n".join(lines) + "\n").encode()

"""Prometheus metrics with TF Serving's names, served at its monitoring path.

Dashboards built for `tensorflow_model_server` keep working: the request
counter is `:tensorflow:serving:request_count{model_name,status}` and the
latency histogram `:tensorflow:serving:request_latency{model_name,API,entrypoint}`
in microseconds, as TF Serving records them (prometheus-client adds the
`_total` suffix it gives every counter). Each server has its own registry so
two servers in one process (tests, benchmarks) do not share counts.
"""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Microseconds: 50 us .. 10 s.
LATENCY_BUCKETS_US = (50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
                      250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000)


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self._requests = Counter(
            ":tensorflow:serving:request_count", "Requests by model and status code.",
            ["model_name", "status"], registry=self.registry)
        self._latency = Histogram(
            ":tensorflow:serving:request_latency", "Request latency in microseconds.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_US, registry=self.registry)
        self._batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Rows per batch run by server-side batching, padding included.",
            ["model_name"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry)
        # Labelled series by label values: prometheus-client's labels() lookup costs more
        # than the update itself, and every request makes two.
        self._series: dict[tuple, object] = {}

    def _child(self, metric, *values: str):
        key = (metric, *values)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*values)
        return child

    def record(self, model_name: str, api: str, entrypoint: str, code: grpc.StatusCode,
               seconds: float) -> None:
        """Count every request; time the successful ones (as TF Serving does)."""
        self._child(self._requests, model_name, code.name).inc()
        if code == grpc.StatusCode.OK:
            self._child(self._latency, model_name, api, entrypoint).observe(seconds * 1e6)

    def record_batch(self, model_name: str, size: int) -> None:
        self._child(self._batch_size, model_name).observe(size)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

"""Requests, errors, latency and the traffic split, from the outcomes the server logged.

The error rate counts every logged request whose status is not OK; latency
percentiles are over the successful ones, as TF Serving's request_latency
histogram times only those (a fast refusal would otherwise flatter p50). Per
label: the version label the client asked for (a traffic split's share),
"(none)" when it named a version or nothing.
"""

from __future__ import annotations

import collections

import grpc
import numpy as np

from tfbig.serving.request_log import outcome, requested_label

PERCENTILES = (50, 90, 99)
STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
NO_LABEL = "(none)"


class RequestSummary:
    """Add records with `add(log)`; `result()` is the JSON-ready summary."""

    def __init__(self):
        self.requests = 0
        self._status = collections.Counter()
        self._labels = collections.Counter()
        self._entrypoints = collections.Counter()
        self._latency_micros: list[int] = []

    def add(self, log) -> None:
        result = outcome(log)
        self.requests += 1
        self._status[STATUS_NAMES.get(result.code, str(result.code))] += 1
        self._labels[requested_label(log) or NO_LABEL] += 1
        self._entrypoints[result.entrypoint or "unknown"] += 1
        if result.code == 0 and result.latency_micros:
            self._latency_micros.append(result.latency_micros)

    @property
    def errors(self) -> int:
        return self.requests - self._status.get("OK", 0)

    def result(self) -> dict:
        latency = np.asarray(self._latency_micros, np.float64) / 1e3
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else None,
            "latency_ms": ({f"p{p}": round(float(np.percentile(latency, p)), 3) for p in PERCENTILES}
                           if latency.size else None),
            "by_status": dict(self._status.most_common()),
            "by_label": dict(self._labels.most_common()),
            "by_entrypoint": dict(self._entrypoints.most_common()),
        }

"""The monitor's verdict as a node_exporter textfile, so that Prometheus can alert on drift.

node_exporter's textfile collector (`--collector.textfile.directory`) serves
every `*.prom` file of a directory; prometheus-client's `write_to_textfile`
writes it to a temporary name and renames it, so the collector never reads
half a file. Metric names (serving/prometheus_alerts.yaml alerts on them):

- tfbig_monitor_distance{model,version,comparison,feature,measure}: a distance;
- tfbig_monitor_threshold{...same}: its threshold, where one is set;
- tfbig_monitor_crossed{model,version,comparison}: 1 when a feature crossed;
- tfbig_monitor_features_crossed{model,version,comparison}: how many did;
- tfbig_monitor_requests, tfbig_monitor_error_rate{model,version}: the traffic read;
- tfbig_monitor_last_run_timestamp_seconds{model}: when it ran (alert when it stops).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from tfbig.monitor.run import CROSSED, DRIFT, SKEW

PREFIX = "tfbig_monitor_"


def write_textfile(path: str, result: dict) -> str:
    registry = CollectorRegistry()
    keys = ["model", "version", "comparison"]
    distance = Gauge(PREFIX + "distance", "Distance of a feature's traffic from its baseline (TFDV's measures).",
                     keys + ["feature", "measure"], registry=registry)
    threshold = Gauge(PREFIX + "threshold", "The threshold a distance is held to.",
                      keys + ["feature", "measure"], registry=registry)
    crossed = Gauge(PREFIX + "crossed", "1 when any feature crossed a threshold.", keys, registry=registry)
    count = Gauge(PREFIX + "features_crossed", "Features that crossed a threshold.", keys, registry=registry)
    requests = Gauge(PREFIX + "requests", "Logged requests read.", ["model", "version"], registry=registry)
    errors = Gauge(PREFIX + "error_rate", "Share of logged requests that failed.", ["model", "version"],
                   registry=registry)
    last_run = Gauge(PREFIX + "last_run_timestamp_seconds", "When tfbig monitor last ran.", ["model"],
                     registry=registry)
    model = result["model"]
    for version in result["versions"]:
        number = str(version["version"])
        requests.labels(model, number).set(version["requests"]["requests"])
        if version["requests"]["error_rate"] is not None:
            errors.labels(model, number).set(version["requests"]["error_rate"])
        for comparison in (SKEW, DRIFT):
            features = (version.get(comparison) or {}).get("features") or {}
            if not version.get(comparison):
                continue
            crossing = [name for name, entry in features.items() if entry["status"] == CROSSED]
            crossed.labels(model, number, comparison).set(1 if crossing else 0)
            count.labels(model, number, comparison).set(len(crossing))
            for name, entry in features.items():
                for measure, value in entry["distances"].items():
                    distance.labels(model, number, comparison, name, measure).set(value)
                    limit = (entry.get("thresholds") or {}).get(measure)
                    if limit is not None:
                        threshold.labels(model, number, comparison, name, measure).set(limit)
    last_run.labels(model).set(time.time())
    write_to_textfile(path, registry)
    return path

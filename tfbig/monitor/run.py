"""`tfbig monitor`: a model's logged traffic against its versions' reference statistics.

Two comparisons per exported version that served traffic:
- skew: every record in [since, until) against the reference sample the
  version was exported with (request features against its "train" split,
  response features against "eval": the model's answers on held-out data);
- drift: the latest window [end - window, end) against the one before it,
  end being --until or now, so a cron job every hour compares "the last hour
  with the hour before" and an idle model says so instead of comparing
  nothing.
A comparison with fewer than `min_count` values on either side is reported
as too few to tell rather than computed: on a handful of values any two
distributions look different.

Records are kept by the model name in their model_spec, not by file prefix:
a logging_config may name any prefix, and one directory may hold many models.
"""

from __future__ import annotations

import dataclasses
import os
import time

from tfbig.errors import UsageError
from tfbig.export.reference_stats import read_reference_stats
from tfbig.monitor.compare import distances
from tfbig.monitor.summary import RequestSummary
from tfbig.monitor.thresholds import Thresholds
from tfbig.monitor.timespec import iso
from tfbig.monitor.traffic import FeatureCounts, feature_values, record_tensors, reference_counts
from tfbig.serving.request_log import log_time, outcome, read_logs

FORMAT = "tfbig-monitor/1"
DEFAULT_WINDOW = 3600.0
# Values per side below which a distance is noise: with 10 buckets, 50 values from one
# distribution already differ from it by a Jensen-Shannon divergence of about 0.05.
MIN_COUNT = 50
SKEW, DRIFT = "skew", "drift"
OK, CROSSED, TOO_FEW, NO_TRAFFIC = "ok", "crossed", "too few values", "no traffic"
SEGMENTS = ("all", "previous", "latest")


class MonitorError(UsageError):
    """A model base path, log directory or version that is not there."""


@dataclasses.dataclass(frozen=True)
class MonitorOptions:
    model_base_path: str
    log_dir: str
    model_name: str | None = None
    version: int | None = None
    since: float | None = None
    until: float | None = None
    window: float = DEFAULT_WINDOW
    min_count: int = MIN_COUNT
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)

    @property
    def name(self) -> str:
        return self.model_name or os.path.basename(os.path.normpath(self.model_base_path))


class _VersionTraffic:
    """One served version's records: the request summary and each feature's counts per segment."""

    def __init__(self, reference: dict | None):
        self.reference = reference
        self.summary = RequestSummary()
        self.records = dict.fromkeys(SEGMENTS, 0)
        self.features = {name: {segment: FeatureCounts(feature) for segment in SEGMENTS}
                         for name, feature in ((reference or {}).get("features") or {}).items()
                         if feature.get("source") in ("request", "response")}

    def add(self, log, segments: list[str]) -> None:
        self.summary.add(log)
        for segment in segments:
            self.records[segment] += 1
        if outcome(log).code != 0 or not self.features:
            return
        tensors = record_tensors(log)
        if tensors is None:
            return
        signature, request, response = tensors
        for name, counts in self.features.items():
            feature = self.reference["features"][name]
            if feature["source"] == "request":
                values = feature_values(feature, request)
            else:
                values = feature_values(feature, response) if feature.get("signature") == signature else None
            if values is not None and values.size:
                for segment in segments:
                    counts[segment].add(values)


def monitor(options: MonitorOptions) -> dict:
    """Read the logs, compare, and return the result monitor.json holds (see the README)."""
    if not os.path.isdir(options.model_base_path):
        raise MonitorError(f"no model base path {options.model_base_path}")
    if not os.path.isdir(options.log_dir):
        raise MonitorError(f"no log directory {options.log_dir}")
    if options.version is not None and not os.path.isdir(_version_dir(options, options.version)):
        raise MonitorError(f"no version {options.version} in {options.model_base_path}")
    if options.since is not None and options.until is not None and options.since >= options.until:
        raise MonitorError(f"--since ({iso(options.since)}) must be before --until ({iso(options.until)})")
    end = options.until if options.until is not None else time.time()
    windows = {"previous": (end - 2 * options.window, end - options.window),
               "latest": (end - options.window, end)}
    model, versions = RequestSummary(), {}
    for log in read_logs(options.log_dir, options.since, options.until):
        spec = log.log_metadata.model_spec
        if spec.name != options.name:
            continue
        model.add(log)
        version = spec.version.value
        if not version or (options.version is not None and version != options.version):
            continue  # failed before a version was chosen: in the model's error rate only
        if version not in versions:
            versions[version] = _VersionTraffic(read_reference_stats(_version_dir(options, version)))
        when = log_time(log)
        versions[version].add(log, ["all"] + [name for name, (start, stop) in windows.items()
                                              if start <= when < stop])
    results = [_version_result(options, version, traffic, windows)
               for version, traffic in sorted(versions.items())]
    return {
        "format": FORMAT, "model": options.name, "model_base_path": os.path.abspath(options.model_base_path),
        "log_dir": os.path.abspath(options.log_dir), "generated": iso(time.time()),
        "since": iso(options.since), "until": iso(options.until), "window_seconds": options.window,
        "min_count": options.min_count, "thresholds_file": options.thresholds.origin,
        "crossed": any(v["crossed"] for v in results),
        "requests": model.result(), "versions": results,
        "notes": _notes(options, model, results),
    }


def _version_dir(options: MonitorOptions, version: int) -> str:
    return os.path.join(options.model_base_path, str(version))


def _version_result(options: MonitorOptions, version: int, traffic: _VersionTraffic, windows: dict) -> dict:
    result = {"version": version, "requests": traffic.summary.result(), "crossed": False,
              "has_reference": traffic.reference is not None}
    if traffic.reference is None:
        return result
    features = traffic.reference["features"]
    skew = {name: _compare(options, name, features[name], counts["all"].counts,
                           reference_counts(features[name], _baseline_split(features[name])), drift=False)
            for name, counts in traffic.features.items()}
    drift = {name: _compare(options, name, features[name], counts["latest"].counts,
                            counts["previous"].counts, drift=True)
             for name, counts in traffic.features.items()}
    result[SKEW] = {"records": traffic.records["all"], "features": skew}
    result[DRIFT] = {"window_seconds": options.window,
                     **{name: [iso(t) for t in windows[name]] for name in ("previous", "latest")},
                     "records": {"previous": traffic.records["previous"], "latest": traffic.records["latest"]},
                     "features": drift}
    result["crossed"] = any(f["status"] == CROSSED for part in (skew, drift) for f in part.values())
    return result


def _baseline_split(feature: dict) -> dict:
    """Serving inputs against the training data, outputs against the answers on eval data."""
    splits = feature["splits"]
    preferred = "train" if feature["source"] == "request" else "eval"
    return splits.get(preferred) or next(iter(splits.values()))


def _compare(options: MonitorOptions, name: str, feature: dict, observed, baseline, *, drift: bool) -> dict:
    thresholds = options.thresholds.for_feature(name, feature["kind"])
    entry = {"kind": feature["kind"], "source": feature["source"], "count": int(observed.sum()),
             "baseline_count": int(baseline.sum()), "distances": {}, "crossed": [],
             "counts": observed.tolist(), "baseline_counts": baseline.tolist()}
    if entry["count"] == 0:
        return {**entry, "status": NO_TRAFFIC}
    if min(entry["count"], entry["baseline_count"]) < options.min_count:
        return {**entry, "status": TOO_FEW}
    found = distances(feature["kind"], observed, baseline, drift=drift)
    entry["distances"] = {measure: round(value, 6) for measure, value in found.items()}
    entry["thresholds"] = {measure: thresholds[measure] for measure in found}
    entry["crossed"] = [measure for measure, value in found.items()
                        if thresholds[measure] is not None and value > thresholds[measure]]
    return {**entry, "status": CROSSED if entry["crossed"] else OK}


def _notes(options: MonitorOptions, model: RequestSummary, results: list[dict]) -> list[str]:
    notes = []
    if model.requests == 0:
        notes.append(f"no logged requests for model {options.name} in {options.log_dir}"
                     + (" in the time range" if options.since or options.until else ""))
    for result in results:
        if not result["has_reference"]:
            notes.append(f"version {result['version']} has no reference statistics (exported before "
                         f"tfbig wrote them, or no longer in the base path): only its requests are summarized")
    names = {name for result in results for name in (result.get(SKEW) or {}).get("features", {})}
    for glob in options.thresholds.unmatched(names) if names else []:
        notes.append(f"{options.thresholds.origin}: {glob!r} matches no feature")
    return notes

"""Request logs: the files the embedded server writes, and `read_logs` to read them back.

Each record is a serialized `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`,
as in TF Serving's request logs and warmup files: the request and its response
(`predict_log`, `classify_log`, `regress_log` or `multi_inference_log`; a REST
request appears as the gRPC request it is equivalent to), and `log_metadata` with
the served model_spec (name, version, signature), the sampling_config and
`timestamp_secs`. A failed request has no response. A log file can therefore be
replayed as warmup records, or read by any PredictionLog reader.

tfbig adds what a monitor needs and PredictionLog has no field for: the outcome
(status code and error message), the latency, the protocol and the time to the
microsecond, as a `tfbig.serving.RequestOutcome` under field REQUEST_OUTCOME_FIELD of
the PredictionLog. A reader that does not know it skips it as an unknown field;
`outcome(log)` reads it.

Files are named `{prefix}.{UTC time of the first record}-{run}-{seq}.tfrecord`:
`run` is a random id per writer (server start), `seq` counts that writer's files.
A file is written as `NAME.tfrecord.tmp` and renamed when closed, so a reader never
sees a file that is still growing; a server killed outright leaves its last
`.tmp` behind, which is never read. Within one run, records are in time order
across its files, which is what lets `read_logs` merge runs lazily.
"""

from __future__ import annotations

import dataclasses
import datetime
import heapq
import os
import re
from typing import Iterator

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, unknown_fields
from tensorflow_serving.apis import prediction_log_pb2

from tfbig.protocol import REQUEST_OUTCOME_FIELD

SUFFIX = ".tfrecord"
PARTIAL_SUFFIX = ".tmp"
TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
READ_BUFFER_BYTES = 1 << 20
# NAME = prefix . time - run - seq .tfrecord; the prefix may itself contain dots and dashes.
FILE_NAME = re.compile(r"^(?P<prefix>.+)\.(?P<time>\d{8}T\d{6}\.\d{6}Z)-(?P<run>[0-9a-f]{8})-(?P<seq>\d{6})"
                       + re.escape(SUFFIX) + "$")
# The kinds of PredictionLog the server writes, by the API that was called.
LOG_KINDS = {"predict": "predict_log", "classify": "classify_log", "regress": "regress_log",
             "multiinference": "multi_inference_log"}


def _outcome_classes():
    """RequestOutcome, and a message holding one at REQUEST_OUTCOME_FIELD, which serializes
    to the bytes a record carries it in."""
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="tfbig/serving/request_log.proto",
                                              package="tfbig.serving", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    outcome = file.message_type.add(name="RequestOutcome")
    for name, number, kind in (("code", 1, F.TYPE_INT32), ("error_message", 2, F.TYPE_STRING),
                               ("latency_micros", 3, F.TYPE_INT64), ("entrypoint", 4, F.TYPE_STRING),
                               ("timestamp_micros", 5, F.TYPE_INT64)):
        outcome.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL)
    holder = file.message_type.add(name="OutcomeHolder")
    holder.field.add(name="outcome", number=REQUEST_OUTCOME_FIELD, type=F.TYPE_MESSAGE,
                     label=F.LABEL_OPTIONAL, type_name=".tfbig.serving.RequestOutcome")
    pool.Add(file)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tfbig.serving.{name}"))
                 for name in ("RequestOutcome", "OutcomeHolder"))


RequestOutcome, _OutcomeHolder = _outcome_classes()


def outcome_bytes(outcome) -> bytes:
    """The outcome as bytes to append to a serialized PredictionLog (a concatenation of
    serialized messages parses as their merge, so the record stays one PredictionLog)."""
    return _OutcomeHolder(outcome=outcome).SerializeToString()


def outcome(log: prediction_log_pb2.PredictionLog):
    """The record's RequestOutcome (`code` 0 is OK, as grpc.StatusCode's numbers); an empty one
    for a record written by something other than tfbig."""
    for field in unknown_fields.UnknownFieldSet(log):
        if field.field_number == REQUEST_OUTCOME_FIELD:
            return RequestOutcome.FromString(field.data)
    return RequestOutcome()


def request_of(log: prediction_log_pb2.PredictionLog):
    """The logged request proto, whichever kind the record holds."""
    return getattr(log, log.WhichOneof("log_type")).request


def requested_label(log: prediction_log_pb2.PredictionLog) -> str:
    """The version label the client asked for ("" when it named a version or none): a traffic
    split's share per label. `log_metadata.model_spec.version` is the version that served it."""
    request = request_of(log)
    spec = request.tasks[0].model_spec if hasattr(request, "tasks") and request.tasks else request.model_spec
    return spec.version_label


def log_time(log: prediction_log_pb2.PredictionLog) -> float:
    """When the request finished, in seconds since the epoch (to the microsecond for tfbig's records)."""
    micros = outcome(log).timestamp_micros
    return micros / 1e6 if micros else float(log.log_metadata.timestamp_secs)


def file_name(prefix: str, first_record_time: float, run: str, seq: int) -> str:
    stamp = datetime.datetime.fromtimestamp(first_record_time, datetime.timezone.utc).strftime(TIME_FORMAT)
    return f"{prefix}.{stamp}-{run}-{seq:06d}{SUFFIX}"


@dataclasses.dataclass(frozen=True)
class LogFile:
    path: str
    prefix: str  # the file name's prefix: the model name unless the config names another
    start: float  # the time of its first record, seconds since the epoch
    run: str
    seq: int


def parse_file_name(path: str) -> LogFile | None:
    match = FILE_NAME.match(os.path.basename(path))
    if match is None:
        return None
    start = datetime.datetime.strptime(match["time"], TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
    return LogFile(path, match["prefix"], start.timestamp(), match["run"], int(match["seq"]))


def log_files(log_dir: str, prefix: str | None = None) -> list[LogFile]:
    """The complete log files in `log_dir` (of one prefix, if given), oldest first."""
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return []
    files = [f for f in (parse_file_name(os.path.join(log_dir, n)) for n in names)
             if f is not None and (prefix is None or f.prefix == prefix)]
    return sorted(files, key=lambda f: (f.start, f.run, f.seq))


def _seconds(when) -> float | None:
    if when is None or isinstance(when, (int, float)):
        return when
    if when.tzinfo is None:
        raise ValueError(f"{when!r} has no time zone: give an aware datetime (e.g. tzinfo=timezone.utc)")
    return when.timestamp()


def _records(path: str) -> Iterator[bytes]:
    import tensorflow as tf

    try:
        for record in tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES):
            yield record.numpy()
    except tf.errors.NotFoundError:  # deleted by the disk bound while we read: it is gone
        return


def _run_logs(files: list[LogFile], since: float | None, until: float | None):
    """One run's records in [since, until) as (time, log), its files being in time order."""
    for index, log_file in enumerate(files):
        if until is not None and log_file.start >= until:
            return
        following = files[index + 1].start if index + 1 < len(files) else None
        if since is not None and following is not None and following < since:
            continue  # every record of this file is at or before the next file's first
        for record in _records(log_file.path):
            log = prediction_log_pb2.PredictionLog.FromString(record)
            when = log_time(log)
            if (since is None or when >= since) and (until is None or when < until):
                yield when, log


def read_logs(log_dir: str, since=None, until=None, *, prefix: str | None = None
              ) -> Iterator[prediction_log_pb2.PredictionLog]:
    """The logged requests in `log_dir` that finished in [since, until), in time order.

    `since` and `until` are seconds since the epoch or time-zone-aware datetimes (None: no
    bound); `prefix` keeps one model's files (their prefix is the model name unless its
    logging_config names another). Files are read lazily, one open file per server run, so a
    long window does not have to fit in memory. Only closed files are read: a server closes
    its file every --request_log_max_file_seconds, which is how late a record can show up.
    """
    since, until = _seconds(since), _seconds(until)
    runs: dict[tuple[str, str], list[LogFile]] = {}
    for log_file in log_files(log_dir, prefix):
        runs.setdefault((log_file.prefix, log_file.run), []).append(log_file)
    streams = [_run_logs(sorted(files, key=lambda f: f.seq), since, until) for files in runs.values()]
    for _, log in heapq.merge(*streams, key=lambda item: item[0]):
        yield log

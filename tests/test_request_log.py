"""Request logging: TF Serving's logging_config and the --request_log_* flags, end to end over real
sockets into real TFRecord files, read back with `read_logs`; and the traffic split's labels in them.

The served model is `TwoInputs` (serving_models.py), saved once as versions 7 and 8: loading it takes
a tenth of a second, so tests that need exact counts start a server of their own and stop it, which
drains the log (what a test then reads is everything).
"""

import concurrent.futures
import logging
import math
import os
import resource
import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from tfbig.serving import Client, config_files
from tfbig.serving.client.split import TrafficSplit
from tfbig.serving.codec import from_tensor_proto
from tfbig.serving.errors import ServeConfigError, ServingError
from tfbig.serving.logging_config import check_flags, request_logging
from tfbig.serving.model_server import model_server_command
from tfbig.serving.options import parse_serve_args
from tfbig.serving.request_log import log_files, outcome, read_logs, requested_label
from tfbig.serving.server.log_writer import LogWriter

from readme import readme_block, run_block
from serving_models import save_two_inputs, start_server

SERVING_DIR = Path(__file__).resolve().parent.parent / "serving"
INPUTS = {"x": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), "tag": np.array([b"a", b"b"], dtype=object)}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """TwoInputs as versions 7 and 8 of one base path."""
    root = tmp_path_factory.mktemp("pair") / "pair"
    shutil.copytree(save_two_inputs(root), root / "8")
    return str(root)


def config_file(folder, base, models: dict[str, str]) -> str:
    """A models.config serving `base` under each name; the value is the model's extra config text."""
    entries = "".join(f'config {{ name: "{name}" base_path: "{base}" model_version_policy {{ all {{}} }} '
                      f'version_labels {{ key: "stable" value: 7 }} version_labels {{ key: "canary" value: 8 }} '
                      f'{extra} }}\n' for name, extra in models.items())
    path = os.path.join(folder, "models.config")
    with open(path, "w") as f:
        f.write(f"model_config_list {{\n{entries}}}\n")
    return path


def logging_text(prefix: str, rate: float) -> str:
    return (f'logging_config {{ log_collector_config {{ type: "tfrecord" filename_prefix: "{prefix}" }} '
            f'sampling_config {{ sampling_rate: {rate} }} }}')


def metric(server, name: str, labels: str = "") -> float:
    for line in server.metrics.exposition().decode().splitlines():
        if line.startswith(f":tfbig:serving:{name}{labels} ") or line.startswith(f":tfbig:serving:{name}{labels}{{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def send(port: int, model: str, n: int, protocol: str = "grpc", **call) -> list[dict]:
    with Client(f"127.0.0.1:{port}", protocol=protocol) as client:
        return [client.predict(model, INPUTS, **call) for _ in range(n)]


# --- sampling and the records ------------------------------------------------------------------

@pytest.mark.slow
def test_sampling_rates_log_within_binomial_bounds_and_stop_loses_nothing(base, tmp_path):
    logs = tmp_path / "logs"
    config = config_file(tmp_path, base, {"all": "", "quarter": logging_text("quarter", 0.25),
                                          "none": logging_text("none", 0.0)})
    server = start_server(config, f"--request_log_dir={logs}", "--request_log_sampling_rate=1")
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(send, server.grpc_port, "all", 50) for _ in range(4)]
            jobs += [pool.submit(send, server.grpc_port, "quarter", 100) for _ in range(4)]
            jobs.append(pool.submit(send, server.grpc_port, "none", 50))
            for job in jobs:
                job.result()
        assert list(read_logs(str(logs))) == []  # all still queued or in open files: stop() must write them
    finally:
        server.stop()
    counts = {name: sum(1 for _ in read_logs(str(logs), prefix=name)) for name in ("all", "quarter", "none")}
    assert counts["all"] == 200 and counts["none"] == 0
    mean, sigma = 400 * 0.25, math.sqrt(400 * 0.25 * 0.75)
    assert abs(counts["quarter"] - mean) <= 5 * sigma, counts
    assert metric(server, "request_log_records", '{outcome="written"}') == 200 + counts["quarter"]
    assert not [name for name in os.listdir(logs) if name.endswith(".tmp")]


def test_records_hold_what_was_sent_and_answered_over_grpc_and_rest(base, tmp_path):
    logs = tmp_path / "logs"
    config = config_file(tmp_path, base, {"pair": ""})
    server = start_server(config, f"--request_log_dir={logs}")
    started = time.time()
    try:
        answers = send(server.grpc_port, "pair", 1, label="canary")
        answers += send(server.rest_port, "pair", 1, "rest", version=7)
        with pytest.raises(ServingError, match="shape"), Client(f"127.0.0.1:{server.grpc_port}") as client:
            client.predict("pair", {**INPUTS, "x": np.ones((2, 3), np.float32)})
        body = {"instances": [{"x": [1.0, 2.0], "tag": "a"}], "signature_name": "nope"}
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/pair:predict"
        assert requests.post(url, json=body).status_code == 400
    finally:
        server.stop()
    records = list(read_logs(str(logs)))
    assert [r.WhichOneof("log_type") for r in records] == ["predict_log"] * 4
    assert [outcome(r).entrypoint for r in records] == ["GRPC", "REST", "GRPC", "REST"]
    assert [outcome(r).code for r in records] == [0, 0] + [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2
    times = [outcome(r).timestamp_micros / 1e6 for r in records]
    assert started <= times[0] <= times[1] <= times[2] <= times[3] <= time.time()
    for record, answer, version in zip(records[:2], answers, (8, 7)):
        meta = record.log_metadata
        assert (meta.model_spec.name, meta.model_spec.version.value, meta.model_spec.signature_name) == \
            ("pair", version, "serving_default")
        assert meta.sampling_config.sampling_rate == 1.0 and list(meta.saved_model_tags) == ["serve"]
        assert abs(meta.timestamp_secs - outcome(record).timestamp_micros / 1e6) < 1
        assert 0 < outcome(record).latency_micros < 30e6
        request, response = record.predict_log.request, record.predict_log.response
        for name, value in INPUTS.items():  # the REST request appears as the PredictRequest it is
            np.testing.assert_array_equal(from_tensor_proto(request.inputs[name]), value)
        for name, value in answer.items():
            np.testing.assert_array_equal(from_tensor_proto(response.outputs[name]), value)
    assert requested_label(records[0]) == "canary" and requested_label(records[1]) == ""
    assert records[1].predict_log.request.model_spec.version.value == 7
    failed = records[2]
    assert not failed.predict_log.HasField("response") and "shape" in outcome(failed).error_message
    assert failed.log_metadata.model_spec.name == "pair"
    assert "nope" in outcome(records[3]).error_message
    # Still a PredictionLog to any reader that knows nothing of tfbig: the extension is skipped.
    plain = prediction_log_pb2.PredictionLog.FromString(records[0].SerializeToString())
    assert plain.predict_log.request.model_spec.version_label == "canary"


# --- rotation, the disk bound, broken disks ----------------------------------------------------

def test_files_rotate_by_size_and_the_oldest_go_past_the_disk_bound(base, tmp_path):
    logs = tmp_path / "logs"
    # A record of INPUTS and its answer takes a few hundred bytes: a few per file, at most 4 files kept.
    flags = [f"--request_log_dir={logs}", "--request_log_max_file_bytes=1300", "--request_log_max_total_bytes=5200"]
    old = logs / "pair.20200101T000000.000000Z-0123abcd-000001.tfrecord"  # an earlier run's file
    os.makedirs(logs)
    old.write_bytes(b"")
    server = start_server(config_file(tmp_path, base, {"pair": ""}), *flags)
    try:
        send(server.grpc_port, "pair", 60)
    finally:
        server.stop()
    files = log_files(str(logs), "pair")
    sizes = [os.path.getsize(f.path) for f in files]
    assert 2 <= len(files) <= 4 and max(sizes) <= 1300 and sum(sizes) <= 5200, sizes
    assert not old.exists()
    assert metric(server, "request_log_deleted_files") >= 2 and metric(server, "request_log_bytes") == sum(sizes)
    kept = [outcome(r).timestamp_micros for r in read_logs(str(logs))]
    assert kept == sorted(kept) and len(files) <= len(kept) < 60
    assert metric(server, "request_log_records", '{outcome="written"}') == 60


def test_an_unwritable_log_directory_keeps_serving_and_counts(base, tmp_path, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the log directory should be")
    server = start_server(config_file(tmp_path, base, {"pair": ""}), f"--request_log_dir={blocked}")
    try:
        with caplog.at_level(logging.ERROR, logger="tfbig.serving"):
            answers = send(server.grpc_port, "pair", 20) + send(server.rest_port, "pair", 20, "rest")
            server.request_log.close()  # wait for the writer to have tried them all
    finally:
        server.stop()
    assert len(answers) == 40
    assert metric(server, "request_log_records", '{outcome="write_error"}') == 40
    assert metric(server, "request_log_write_errors") >= 1
    assert len([r for r in caplog.records if "cannot write the request log" in r.getMessage()]) == 1


@pytest.mark.slow
def test_a_full_disk_loses_records_not_requests_and_writing_resumes(base, tmp_path):
    """RLIMIT_FSIZE makes every write past the limit fail with EFBIG, as a full disk fails with ENOSPC."""
    logs = tmp_path / "logs"
    server = start_server(config_file(tmp_path, base, {"pair": ""}), f"--request_log_dir={logs}",
                          "--request_log_max_file_seconds=0.2")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (600, hard))
        try:
            assert len(send(server.grpc_port, "pair", 10)) == 10
            deadline = time.monotonic() + 10
            while metric(server, "request_log_write_errors") == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        time.sleep(1.1)  # the writer's pause after a failure
        send(server.grpc_port, "pair", 3)
    finally:
        server.stop()
    assert metric(server, "request_log_write_errors") >= 1
    lost = metric(server, "request_log_records", '{outcome="write_error"}')
    written = metric(server, "request_log_records", '{outcome="written"}')
    assert lost >= 1 and written >= 3 and lost + written == 13
    assert sum(1 for _ in read_logs(str(logs))) == written


def test_a_reloaded_config_starts_logging_and_a_bad_logging_config_is_refused(base, tmp_path):
    server = start_server(config_file(tmp_path, base, {"pair": ""}))
    logs = tmp_path / "logs"
    try:
        send(server.grpc_port, "pair", 2)  # not logged: no logging_config, no --request_log_dir
        with Client(f"127.0.0.1:{server.grpc_port}") as client:
            bad = models(f'model_config_list {{ config {{ name: "pair" base_path: "{base}" '
                         f'{logging_text(logs / "pair", 1.5)} }} }}')
            with pytest.raises(ServingError, match="between 0 and 1"):
                client.reload_config(bad)
            client.reload_config(models(f'model_config_list {{ config {{ name: "pair" base_path: "{base}" '
                                        f'{logging_text(logs / "pair", 1.0)} }} }}'))
        send(server.grpc_port, "pair", 3)
    finally:
        server.stop()
    assert sum(1 for _ in read_logs(str(logs))) == 3


# --- the reader --------------------------------------------------------------------------------

def test_read_logs_merges_runs_in_time_order_within_a_window(tmp_path):
    """Two runs (server starts) writing the same prefix interleave in time; read back merged."""
    from prometheus_client import CollectorRegistry

    def record(when: float) -> bytes:
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.model_spec.name = "m"
        log.log_metadata.timestamp_secs = int(when)
        return log.SerializeToString()

    prefix = str(tmp_path / "m")
    times = {0: [100.0 + 2 * i for i in range(20)], 1: [101.0 + 2 * i for i in range(20)]}
    for run in (0, 1):
        writer = LogWriter(max_file_bytes=200, max_total_bytes=1 << 20, max_file_seconds=60,
                           registry=CollectorRegistry())
        for when in times[run]:
            writer.submit(prefix, when, lambda when=when: record(when))
        writer.close()
    assert len(log_files(str(tmp_path))) > 4
    read = [r.log_metadata.timestamp_secs for r in read_logs(str(tmp_path))]
    assert read == list(range(100, 140))
    window = [r.log_metadata.timestamp_secs for r in read_logs(str(tmp_path), since=110, until=121.5)]
    assert window == list(range(110, 122))
    assert list(read_logs(str(tmp_path / "missing"))) == []
    with pytest.raises(ValueError, match="time zone"):
        import datetime
        list(read_logs(str(tmp_path), since=datetime.datetime(2020, 1, 1)))


# --- the traffic split, as the server logged it --------------------------------------------------

def test_a_traffic_split_shows_in_the_logs_per_label(base, tmp_path):
    logs = tmp_path / "logs"
    server = start_server(config_file(tmp_path, base, {"pair": ""}), f"--request_log_dir={logs}")
    split = {"stable": 0.5, "canary": 0.5}
    keys = [f"user-{i}" for i in range(40)]
    try:
        with Client(f"127.0.0.1:{server.grpc_port}", split=split) as client:
            for key in keys:
                client.predict("pair", INPUTS, key=key)
            client.predict("pair", INPUTS, key="user-0", version=7)  # a named version bypasses the split
        with Client(f"127.0.0.1:{server.rest_port}", protocol="rest", split=split, key="user-1") as client:
            client.predict("pair", INPUTS)
    finally:
        server.stop()
    records = list(read_logs(str(logs)))
    expected = [TrafficSplit(split).label_for(key) for key in keys] + ["", TrafficSplit(split).label_for("user-1")]
    assert [requested_label(r) for r in records] == expected
    assert {"stable", "canary"} <= set(expected)
    served = {requested_label(r): r.log_metadata.model_spec.version.value for r in records if requested_label(r)}
    assert served == {"stable": 7, "canary": 8}


def test_the_readme_split_and_reading_examples_run_as_written(base, tmp_path):
    logs = tmp_path / "logs"
    server = start_server(config_file(tmp_path, base, {"pair": ""}), f"--request_log_dir={logs}")
    try:
        send_code = readme_block('split={"stable": 0.9, "canary": 0.1}) as client:',
                                 {"localhost:8500": f"127.0.0.1:{server.grpc_port}", '"digits"': '"pair"'})
        run_block("from test_request_log import INPUTS as images\n" + send_code)
    finally:
        server.stop()
    read = run_block(readme_block("from tfbig.serving.request_log import", {
        "/var/log/tfbig": str(logs), 'prefix="digits"': 'prefix="pair"'}))
    counts = read["counts"]
    assert sum(counts.values()) == 100 and len(read["latencies"]) == 100
    assert set(counts) == {("stable", 7, 0), ("canary", 8, 0)} and counts["canary", 8, 0] < 30


# --- configuration -------------------------------------------------------------------------------

def models(text: str):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def test_flags_log_every_model_without_a_logging_config_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = models('model_config_list { config { name: "a" base_path: "/m/a" } '
                    f'config {{ name: "b" base_path: "/m/b" {logging_text("/abs/bee", 0.5)} }} '
                    f'config {{ name: "c" base_path: "/m/c" {logging_text("sub/cee", 0.1)} }} }}')
    flagged = request_logging(config, parse_serve_args(["--request_log_dir=logs", "--request_log_sampling_rate=0.3"]))
    assert {name: (m.prefix, m.rate) for name, m in flagged.items()} == {
        "a": (str(tmp_path / "logs" / "a"), 0.3), "b": ("/abs/bee", 0.5), "c": (str(tmp_path / "logs/sub/cee"), 0.1)}
    own = request_logging(config, parse_serve_args([]))
    assert sorted(own) == ["b", "c"] and own["c"].prefix == str(tmp_path / "sub" / "cee")


@pytest.mark.parametrize("extra, problem", [
    ('logging_config { log_collector_config { type: "pubsub" } }', "type 'pubsub'"),
    ('logging_config { log_collector_config { filename_prefix: "/logs/" } }', "names a directory"),
    ('logging_config { sampling_config { sampling_rate: 1.5 } }', "between 0 and 1"),
    ('logging_config { sampling_config { per_task_sampling_configs { sampling_rate: 1 } } }', "one sampling_rate"),
])
def test_a_logging_config_that_cannot_be_honoured_is_refused(extra, problem):
    with pytest.raises(ServeConfigError, match=problem):
        config_files.check_models(models(f'model_config_list {{ config {{ name: "a" base_path: "/m" {extra} }} }}'))


@pytest.mark.parametrize("flags, problem", [
    (["--request_log_sampling_rate=2"], "between 0 and 1"),
    (["--request_log_max_file_bytes=0"], "must be positive"),
    (["--request_log_max_file_bytes=100", "--request_log_max_total_bytes=10"], "at least one file"),
])
def test_bad_request_log_flags_are_refused(flags, problem):
    with pytest.raises(ServeConfigError, match=problem):
        check_flags(parse_serve_args(flags))


def test_tensorflow_model_server_gets_the_logging_config_in_its_models_config(tmp_path):
    options = parse_serve_args(["--model_base_path=/models/gpt", "--model_name=gpt", "--request_log_dir=/logs",
                                "--request_log_sampling_rate=0.05"])
    argv = model_server_command(options, str(tmp_path), "tms")
    assert f"--model_config_file={tmp_path}/models.config" in argv
    assert not [arg for arg in argv if "request_log" in arg]  # the binary knows no such flags
    written = models((tmp_path / "models.config").read_text()).model_config_list.config[0]
    assert written.logging_config.log_collector_config.filename_prefix == "/logs/gpt"
    assert written.logging_config.sampling_config.sampling_rate == pytest.approx(0.05)
    # A user's models.config is copied with the logging added; polling would watch the copy: refused.
    mine = tmp_path / "mine.config"
    mine.write_text('model_config_list { config { name: "gpt" base_path: "/models/gpt" } }')
    options = parse_serve_args([f"--model_config_file={mine}", "--request_log_dir=/logs"])
    argv = model_server_command(options, str(tmp_path / "copy"), "tms")
    assert f"--model_config_file={tmp_path}/copy/models.config" in argv
    polled = parse_serve_args([f"--model_config_file={mine}", "--request_log_dir=/logs",
                               "--model_config_file_poll_wait_seconds=30"])
    with pytest.raises(ServeConfigError, match="put logging_config in"):
        model_server_command(polled, str(tmp_path / "other"), "tms")


def test_the_example_logging_config_parses_and_passes_the_checks():
    config = models((SERVING_DIR / "models.logging.config").read_text())
    config_files.check_models(config)
    logged = request_logging(config, parse_serve_args([]))
    assert logged and all(0 < m.rate <= 1 and os.path.isabs(m.prefix) for m in logged.values())


def test_the_writers_queue_is_bounded_in_records_and_in_request_bytes(tmp_path):
    """A flood of large requests behind a slow disk is dropped and counted, not held in memory."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    # Drained only when closed: everything submitted waits in the queue until then.
    writer = LogWriter(max_file_bytes=1 << 20, max_total_bytes=1 << 30, max_file_seconds=60, registry=registry,
                       queue_records=10, queue_bytes=1000, drain_interval_s=600)
    record = prediction_log_pb2.PredictionLog().SerializeToString
    for _ in range(3):
        writer.submit(str(tmp_path / "m"), 1.0, record, size=400)  # the third would pass 1000 bytes
    for _ in range(20):
        writer.submit(str(tmp_path / "m"), 1.0, record, size=0)  # only 8 more fit in 10 records
    assert registry.get_sample_value(":tfbig:serving:request_log_records_total", {"outcome": "queue_full"}) == 13
    writer.close()
    assert registry.get_sample_value(":tfbig:serving:request_log_records_total", {"outcome": "written"}) == 10
    assert sum(1 for _ in read_logs(str(tmp_path))) == 10

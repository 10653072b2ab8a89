"""`tfbig serve`'s flags and config files, the tensorflow_model_server launcher (against a fake
binary that answers ModelService.GetModelStatus over real gRPC) and the deployment files in
serving/. Fast: no model is built or loaded."""

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import tfbig
from tfbig.cli import main
from tfbig.serving import config_files, model_server
from tfbig.serving.errors import ModelServerError, ServeConfigError
from tfbig.serving.model_server import model_server_command, run_model_server
from tfbig.serving.options import ServeOptions, parse_serve_args
from tfbig.serving.protos import BatchingParameters, MonitoringConfig

from serving_models import free_port, write_tls_files

SERVING_DIR = Path(__file__).resolve().parent.parent / "serving"
_FIELDS = [field.name for field in dataclasses.fields(ServeOptions)]
TFBIG_ONLY_FLAGS = _FIELDS[_FIELDS.index("engine"):]


def parse(proto_class, text):
    return text_format.Parse(text, proto_class())


def model_config(text):
    return parse(model_server_config_pb2.ModelServerConfig, text)


# --- flags -------------------------------------------------------------------------------------

def test_parse_serve_args_accepts_tf_serving_spellings():
    options = parse_serve_args(["--port=9000", "--rest_api_port", "8501", "--model_base_path=/m",
                                "--enable_batching", "--xla_cpu_compilation_enabled=true",
                                "--per_process_gpu_memory_fraction", "0.5"])
    assert (options.port, options.rest_api_port, options.enable_batching) == (9000, 8501, True)
    # Passed on in PASS_THROUGH_FLAGS order, in --flag=value form.
    assert options.pass_through == ("--per_process_gpu_memory_fraction=0.5",
                                    "--xla_cpu_compilation_enabled=true")
    dashed = parse_serve_args(["--rest-api-port=8502", "--enable_batching=false"])
    assert (dashed.rest_api_port, dashed.enable_batching, dashed.pass_through) == (8502, False, ())


def test_parse_serve_args_rejects_a_bad_boolean(capsys):
    with pytest.raises(SystemExit):
        parse_serve_args(["--enable_batching=maybe"])
    assert "expected true or false" in capsys.readouterr().err


# --- models.config -----------------------------------------------------------------------------

@pytest.mark.parametrize("policy, expected", [
    ("latest:2", "latest { num_versions: 2 }"),
    ("all", "all {}"),
    ("specific:1,3", "specific { versions: 1 versions: 3 }"),
])
def test_model_server_config_from_flags(tmp_path, policy, expected):
    options = parse_serve_args([f"--model_base_path={tmp_path}/digits", "--model_name=digits",
                                f"--model_version_policy={policy}", "--version_labels=stable=1"])
    assert config_files.model_server_config(options) == model_config(f"""
        model_config_list {{ config {{
          name: "digits" base_path: "{tmp_path}/digits" model_platform: "tensorflow"
          model_version_policy {{ {expected} }}
          version_labels {{ key: "stable" value: 1 }} }} }}""")


def test_relative_model_base_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = parse_serve_args(["--model_base_path=models/digits"])
    model = config_files.model_server_config(options).model_config_list.config[0]
    assert (model.name, model.base_path) == ("default", str(tmp_path / "models" / "digits"))


@pytest.mark.parametrize("flag, value", [
    ("model_version_policy", "latest:0"), ("model_version_policy", "newest"),
    ("model_version_policy", "specific:a"), ("model_version_policy", "all:2"),
    ("version_labels", "stable"), ("version_labels", "stable=x"), ("version_labels", "=1"),
    ("version_labels", "stable=\u00b2"),
])
def test_bad_version_flags_name_the_flag(flag, value):
    options = parse_serve_args(["--model_base_path=/m", f"--{flag}={value}"])
    with pytest.raises(ServeConfigError, match=f"--{flag} '{value}'"):
        config_files.model_server_config(options)


@pytest.mark.parametrize("name", ["a/b", "..", "../digits", "/models/digits", ""])
def test_unsafe_model_names_are_rejected(tmp_path, name):
    with pytest.raises(ServeConfigError, match="is not allowed"):
        config_files.model_server_config(parse_serve_args(["--model_base_path=/m", f"--model_name={name}"]))
    path = tmp_path / "models.config"
    path.write_text(f'model_config_list {{ config {{ name: "{name}" base_path: "/m" }} }}')
    with pytest.raises(ServeConfigError, match="is not allowed"):
        config_files.model_server_config(parse_serve_args([f"--model_config_file={path}"]))


def test_nothing_to_serve_and_both_sources_are_rejected(tmp_path):
    with pytest.raises(ServeConfigError, match="nothing to serve"):
        config_files.model_server_config(parse_serve_args([]))
    with pytest.raises(ServeConfigError, match="not both"):
        config_files.model_server_config(parse_serve_args(["--model_base_path=/m", "--model_config_file=x"]))


# --- batching ----------------------------------------------------------------------------------

def test_batching_parameters_from_flags():
    assert config_files.batching_parameters(parse_serve_args([])) is None
    options = parse_serve_args(["--max_batch_size=16", "--batch_timeout_micros=500",
                                "--num_batch_threads=2", "--allowed_batch_sizes=4,16"])
    assert config_files.batching_parameters(options) == parse(BatchingParameters, """
        max_batch_size { value: 16 } batch_timeout_micros { value: 500 }
        num_batch_threads { value: 2 } allowed_batch_sizes: [4, 16]""")


def test_batching_parameters_from_a_file_with_flag_overrides(tmp_path):
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 100 }")
    from_file = parse_serve_args(["--enable_batching", f"--batching_parameters_file={path}"])
    assert config_files.batching_parameters(from_file) == parse(
        BatchingParameters, "max_batch_size { value: 8 } batch_timeout_micros { value: 100 }")
    overridden = dataclasses.replace(from_file, batch_timeout_micros=0)
    assert config_files.batching_parameters(overridden).batch_timeout_micros.value == 0


def test_bad_batching_is_rejected(tmp_path):
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 8 }")
    with pytest.raises(ServeConfigError, match="without --enable_batching"):
        config_files.batching_parameters(parse_serve_args([f"--batching_parameters_file={path}"]))
    with pytest.raises(ServeConfigError, match=r"\(16\) must equal max_batch_size \(32\)"):
        config_files.batching_parameters(parse_serve_args(["--max_batch_size=32", "--allowed_batch_sizes=8,16"]))
    with pytest.raises(ServeConfigError, match=r"\(8\) must equal max_batch_size \(1000\)"):  # its default
        config_files.batching_parameters(parse_serve_args(["--enable_batching", "--allowed_batch_sizes=4,8"]))
    path.write_text("max_batch_size: 8")
    with pytest.raises(ServeConfigError, match="--batching_parameters_file: .* not a valid BatchingParameters"):
        config_files.batching_parameters(
            parse_serve_args(["--enable_batching", f"--batching_parameters_file={path}"]))


@pytest.mark.parametrize("fields, problem", [
    ("max_execution_batch_size { value: 8 } allowed_batch_sizes: [4, 8]", None),
    ("allowed_batch_sizes: [4, 32]", None),  # max_execution_batch_size defaults to max_batch_size
    ("max_execution_batch_size { value: 8 } allowed_batch_sizes: [4, 16]",
     r"last entry in allowed_batch_sizes \(16\) must equal max_execution_batch_size \(8\)"),
    ("max_execution_batch_size { value: 64 }", r"max_execution_batch_size \(64\) must not exceed max_batch_size \(32\)"),
])
def test_large_batch_splitting_parameters_are_checked_as_tf_serving_checks_them(tmp_path, fields, problem):
    path = tmp_path / "batching.txt"
    path.write_text(f"max_batch_size {{ value: 32 }} enable_large_batch_splitting {{ value: true }} {fields}")
    options = parse_serve_args(["--enable_batching", f"--batching_parameters_file={path}"])
    if problem is None:
        assert config_files.batching_parameters(options).enable_large_batch_splitting.value
    else:
        with pytest.raises(ServeConfigError, match=problem):
            config_files.batching_parameters(options)


# --- the binary's command line -----------------------------------------------------------------

def test_model_server_command_writes_the_config_files_and_flags(tmp_path):
    ssl = tmp_path / "ssl.config"
    ssl.write_text('server_key: "KEY" server_cert: "CERT"')
    options = parse_serve_args([
        "--port=9000", "--rest_api_port=9001", "--model_name=digits", "--model_base_path=/models/digits",
        "--model_version_policy=specific:1,2", "--version_labels=stable=1", "--version_labels=canary=2",
        "--allow_version_labels_for_unavailable_models", "--max_batch_size=32",
        "--batch_timeout_micros=2000", "--allowed_batch_sizes=8,16,32", "--prometheus_path=/metrics",
        f"--ssl_config_file={ssl}", "--enable_model_warmup=false", "--rest-api-enable-cors-support",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=2000", "--tensorflow_intra_op_parallelism=2",
        "--xla_cpu_compilation_enabled=true", "--saved_model_tags=serve,tpu", "--enable_grpc_healthcheck_service",
        "--grpc_max_threads=16",
        # tfbig's own flags: they shape the files but never reach the binary.
        "--engine=tensorflow_model_server", "--host=127.0.0.1", "--max_request_bytes=1000",
        "--max_request_batch_size=64", "--drain_seconds=3", "--config_dir=/unused",
    ])
    config_dir = tmp_path / "made" / "config"
    argv = model_server_command(options, str(config_dir), "/bin/tms")

    assert argv == [
        "/bin/tms", "--port=9000", "--rest_api_port=9001", "--rest_api_timeout_in_ms=30000",
        f"--model_config_file={config_dir}/models.config", "--model_config_file_poll_wait_seconds=0",
        "--file_system_poll_wait_seconds=1",
        "--enable_batching=true", f"--batching_parameters_file={config_dir}/batching_parameters.txt",
        f"--monitoring_config_file={config_dir}/monitoring.config", f"--ssl_config_file={ssl}",
        "--enable_model_warmup=false", "--num_request_iterations_for_warmup=0",
        "--max_num_load_retries=5", "--load_retry_interval_micros=60000000",
        "--allow_version_labels_for_unavailable_models=true", "--rest_api_enable_cors_support=true",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=2000", "--enable_grpc_healthcheck_service=true",
        "--saved_model_tags=serve,tpu",
        "--tensorflow_intra_op_parallelism=2", "--grpc_max_threads=16", "--xla_cpu_compilation_enabled=true",
    ]
    assert not [arg for arg in argv for name in TFBIG_ONLY_FLAGS if arg.startswith(f"--{name}=")]
    assert model_config((config_dir / "models.config").read_text()) == model_config("""
        model_config_list { config {
          name: "digits" base_path: "/models/digits" model_platform: "tensorflow"
          model_version_policy { specific { versions: 1 versions: 2 } }
          version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } } }""")
    assert parse(BatchingParameters, (config_dir / "batching_parameters.txt").read_text()) == parse(
        BatchingParameters,
        "max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } allowed_batch_sizes: [8, 16, 32]")
    assert parse(MonitoringConfig, (config_dir / "monitoring.config").read_text()) == parse(
        MonitoringConfig, 'prometheus_config { enable: true path: "/metrics" }')


def test_model_server_command_defaults_write_only_the_model_config(tmp_path):
    argv = model_server_command(parse_serve_args(["--model_base_path=/models/gpt"]), str(tmp_path), "tms")
    assert argv == [
        "tms", "--port=8500", "--rest_api_port=0", "--rest_api_timeout_in_ms=30000",
        f"--model_config_file={tmp_path}/models.config", "--model_config_file_poll_wait_seconds=0",
        "--file_system_poll_wait_seconds=1", "--enable_model_warmup=true",
        "--num_request_iterations_for_warmup=0", "--max_num_load_retries=5",
        "--load_retry_interval_micros=60000000", "--allow_version_labels_for_unavailable_models=false",
        "--rest_api_enable_cors_support=false",
    ]
    assert sorted(os.listdir(tmp_path)) == ["models.config"]


def test_a_given_model_config_file_is_passed_by_its_path_so_polling_sees_edits(tmp_path):
    path = tmp_path / "mine.config"
    path.write_text('model_config_list { config { name: "gpt" base_path: "/models/gpt" } }')
    options = parse_serve_args([f"--model_config_file={path}", "--model_config_file_poll_wait_seconds=60"])
    argv = model_server_command(options, str(tmp_path / "config"), "tms")
    assert f"--model_config_file={path}" in argv and "--model_config_file_poll_wait_seconds=60" in argv
    assert os.listdir(tmp_path / "config") == []


def test_model_server_command_rejects_a_bad_ssl_file_before_launch(tmp_path):
    ssl = tmp_path / "ssl.config"
    ssl.write_text("server_key: KEY")
    with pytest.raises(ServeConfigError, match="--ssl_config_file"):
        model_server_command(parse_serve_args(["--model_base_path=/m", f"--ssl_config_file={ssl}"]),
                             str(tmp_path), "tms")


# --- run_model_server against fake binaries ----------------------------------------------------

FAKE_SERVER = """#!PYTHON
# A stand-in for tensorflow_model_server: records its argv, answers GetModelStatus with
# AVAILABLE for the models in --model_config_file (over TLS with --ssl_config_file, with the
# key and certificate the test left beside it), exits 0 on SIGTERM.
import json, os, signal, sys, threading
from concurrent import futures

with open(sys.argv[0] + ".argv.json", "w") as f:
    json.dump({"argv": sys.argv, "pid": os.getpid()}, f)

import grpc
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
with open(flags["model_config_file"]) as f:
    config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
names = {model.name for model in config.model_config_list.config}


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def GetModelStatus(self, request, context):
        if request.model_spec.name not in names:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such model")
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.add(version=1, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        return response


stopped = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopped.set())
server = grpc.server(futures.ThreadPoolExecutor(2))
model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(), server)
if "ssl_config_file" in flags:
    with open(sys.argv[0] + ".key", "rb") as key, open(sys.argv[0] + ".crt", "rb") as cert:
        credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
    server.add_secure_port("127.0.0.1:" + flags["port"], credentials)
else:
    server.add_insecure_port("127.0.0.1:" + flags["port"])
server.start()
stopped.wait()
server.stop(0)
"""


def fake_binary(tmp_path, text) -> str:
    path = tmp_path / "tensorflow_model_server"
    path.write_text(text.replace("#!PYTHON", f"#!{sys.executable}"))
    path.chmod(0o755)
    return str(path)


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


class StderrWatch:
    """Stands in for sys.stderr and says when run_model_server has announced the server."""

    def __init__(self):
        self.text = ""
        self.announced = threading.Event()

    def write(self, text):
        self.text += text
        if "serving " in self.text:
            self.announced.set()

    def flush(self):
        pass


def send_sigterm_to_self_when(ready) -> threading.Thread:
    """run_model_server runs in the main thread (signal handlers need it); this plays Kubernetes."""
    def play():
        deadline = time.monotonic() + 60
        while not ready():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_run_model_server_serves_until_sigterm(tmp_path, monkeypatch):
    binary = fake_binary(tmp_path, FAKE_SERVER)
    port, rest_port = free_port(), free_port()
    options = parse_serve_args([f"--port={port}", f"--rest_api_port={rest_port}", "--model_name=digits",
                                "--model_base_path=/models/digits", "--version_labels=stable=1",
                                f"--config_dir={tmp_path / 'config'}", "--engine=tensorflow_model_server"])
    watch = StderrWatch()
    monkeypatch.setattr(sys, "stderr", watch)
    thread = send_sigterm_to_self_when(watch.announced.is_set)
    previous_handler = signal.getsignal(signal.SIGTERM)

    assert run_model_server(options, binary=binary, wait_timeout_s=30) == 0

    thread.join(5)
    # Other threads (a log record from an earlier test's server) may write to stderr meanwhile.
    assert f"serving digits with tensorflow_model_server on gRPC :{port}, REST :{rest_port}" \
        in watch.text.splitlines()
    assert signal.getsignal(signal.SIGTERM) == previous_handler
    recorded = json.loads(Path(binary + ".argv.json").read_text())
    assert_gone(recorded["pid"])
    assert recorded["argv"] == model_server_command(options, str(tmp_path / "config"), binary)
    written = model_config((tmp_path / "config" / "models.config").read_text())
    assert dict(written.model_config_list.config[0].version_labels) == {"stable": 1}


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_run_model_server_over_tls_waits_for_the_secure_port(tmp_path, monkeypatch):
    binary = fake_binary(tmp_path, FAKE_SERVER)
    key, cert, ssl_config = write_tls_files(tmp_path)
    Path(binary + ".key").write_bytes(key)
    Path(binary + ".crt").write_bytes(cert)
    port = free_port()
    options = parse_serve_args([f"--port={port}", "--model_name=digits", "--model_base_path=/models/digits",
                                f"--ssl_config_file={ssl_config}", "--engine=tensorflow_model_server",
                                f"--rest_api_port={free_port()}"])
    watch = StderrWatch()
    monkeypatch.setattr(sys, "stderr", watch)
    thread = send_sigterm_to_self_when(watch.announced.is_set)

    assert run_model_server(options, binary=binary, wait_timeout_s=30) == 0

    thread.join(5)
    assert any(line.startswith(f"serving digits with tensorflow_model_server on gRPC :{port}, REST :")
               for line in watch.text.splitlines())
    assert "note: tensorflow_model_server serves REST without TLS" in watch.text
    assert f"--ssl_config_file={ssl_config}" in json.loads(Path(binary + ".argv.json").read_text())["argv"]


def made_config_dir(tmp_path, monkeypatch) -> Path:
    """Point mkdtemp at a known folder, to check run_model_server removes the one it made."""
    made = tmp_path / "made"
    made.mkdir()
    monkeypatch.setattr(model_server.tempfile, "mkdtemp", lambda **_: str(made))
    return made


def test_run_model_server_reports_an_early_exit_and_removes_its_config_dir(tmp_path, monkeypatch):
    binary = fake_binary(tmp_path, "#!/bin/sh\nexit 3\n")
    made = made_config_dir(tmp_path, monkeypatch)
    options = parse_serve_args([f"--port={free_port()}", "--model_name=digits", "--model_base_path=/m"])
    with pytest.raises(ModelServerError, match="exited with code 3 before serving digits"):
        run_model_server(options, binary=binary, wait_timeout_s=30)
    assert not made.exists()


def test_run_model_server_times_out_naming_the_models_and_stops_the_binary(tmp_path):
    binary = fake_binary(tmp_path, '#!/bin/sh\necho $$ > "$0.pid"\nexec sleep 60\n')
    path = tmp_path / "models.config"
    path.write_text('model_config_list { config { name: "digits" base_path: "/m/digits" } '
                    'config { name: "gpt" base_path: "/m/gpt" } }')
    options = parse_serve_args([f"--port={free_port()}", f"--model_config_file={path}"])
    with pytest.raises(ModelServerError, match="did not make digits, gpt available .* within 0.5 s"):
        run_model_server(options, binary=binary, wait_timeout_s=0.5)
    assert_gone(int(Path(binary + ".pid").read_text()))


@pytest.mark.timeout(60)
def test_sigterm_while_starting_stops_the_binary_without_an_error(tmp_path):
    binary = fake_binary(tmp_path, '#!/bin/sh\necho $$ > "$0.pid"\nexec sleep 60\n')
    options = parse_serve_args([f"--port={free_port()}", "--model_base_path=/m"])
    original = signal.getsignal(signal.SIGTERM)
    # Sent once run_model_server forwards signals, while it waits for the models.
    thread = send_sigterm_to_self_when(lambda: signal.getsignal(signal.SIGTERM) != original)
    # sleep dies of the forwarded SIGTERM: 128 + 15, as a shell reports it.
    assert run_model_server(options, binary=binary, wait_timeout_s=30) == 128 + signal.SIGTERM
    thread.join(5)
    assert_gone(int(Path(binary + ".pid").read_text()))


FAKE_VERSION = """#!/bin/sh
echo "$0 $*" > "$0.argv"
printf 'TensorFlow ModelServer: 2.99.0-rc0+dev.sha.abc\\nTensorFlow Library: 2.99.0\\n'
"""


@pytest.mark.parametrize("engine", ["auto", "tensorflow_model_server"])
def test_serve_version_is_the_binarys_own_when_it_serves(tmp_path, monkeypatch, capfd, engine):
    binary = fake_binary(tmp_path, FAKE_VERSION)
    monkeypatch.setenv("PATH", str(tmp_path))  # find_model_server finds the fake
    # No model is needed, as with tensorflow_model_server --version.
    assert main(["serve", "--version", f"--engine={engine}"]) == 0
    assert capfd.readouterr().out == "TensorFlow ModelServer: 2.99.0-rc0+dev.sha.abc\nTensorFlow Library: 2.99.0\n"
    assert Path(binary + ".argv").read_text() == f"{binary} --version\n"


def test_serve_version_of_the_embedded_server_names_tfbig_and_tensorflow(capsys):
    import tensorflow as tf

    assert main(["serve", "--version", "--engine=embedded"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"TensorFlow ModelServer: {tfbig.__version__}+tfbig.embedded", f"TensorFlow Library: {tf.__version__}"]
    assert parse_serve_args(["--version=false", "--version_labels=stable=1"]).version is False


# --- serving/ deployment files -----------------------------------------------------------------

def test_deployment_config_files_parse_and_pass_the_checks():
    models = model_config((SERVING_DIR / "models.config").read_text())
    config_files.check_models(models)
    by_name = {model.name: model for model in models.model_config_list.config}
    assert sorted(by_name) == ["digits", "gpt"]
    digits = by_name["digits"]
    assert set(digits.version_labels) == {"stable", "canary"}
    assert set(digits.version_labels.values()) <= set(digits.model_version_policy.specific.versions)
    batching = parse(BatchingParameters, (SERVING_DIR / "batching_parameters.txt").read_text())
    config_files.check_batching(batching)
    assert batching == parse(BatchingParameters, """
        max_batch_size { value: 32 } batch_timeout_micros { value: 2000 }
        max_enqueued_batches { value: 100 } num_batch_threads { value: 4 }
        allowed_batch_sizes: [8, 16, 32] pad_variable_length_inputs: false""")
    monitoring = parse(MonitoringConfig, (SERVING_DIR / "monitoring.config").read_text())
    assert monitoring == parse(MonitoringConfig,
                               'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
    # And through the flags that deployments use to point at them.
    options = parse_serve_args([f"--model_config_file={SERVING_DIR / 'models.config'}", "--enable_batching",
                                f"--batching_parameters_file={SERVING_DIR / 'batching_parameters.txt'}",
                                f"--monitoring_config_file={SERVING_DIR / 'monitoring.config'}"])
    assert config_files.model_server_config(options) == models
    assert config_files.batching_parameters(options) == batching
    assert config_files.monitoring_config(options) == monitoring


CONFIG_PROTOS = {"models.config": model_server_config_pb2.ModelServerConfig,
                 "batching_parameters.txt": BatchingParameters, "monitoring.config": MonitoringConfig}


def config_paths(args) -> dict:
    """{flag: path} for the flags that name files in /config."""
    return {arg.split("=", 1)[0]: arg.split("=", 1)[1] for arg in args if "=/config/" in arg}


def check_config_args(args) -> ServeOptions:
    """The args are valid serve flags naming the three mounted config files."""
    assert config_paths(args) == {"--model_config_file": "/config/models.config",
                                  "--batching_parameters_file": "/config/batching_parameters.txt",
                                  "--monitoring_config_file": "/config/monitoring.config"}
    options = parse_serve_args(args)
    assert options.enable_batching and options.allow_version_labels_for_unavailable_models
    return options


@pytest.mark.parametrize("name, image, ready_path", [
    ("tensorflow-model-server.yaml", "tensorflow/serving:2.19.0", "/v1/models/digits"),
    ("tfbig-embedded.yaml", "tfbig:latest", "/readyz"),
])
def test_k8s_manifests(name, image, ready_path):
    documents = list(yaml.safe_load_all((SERVING_DIR / "k8s" / name).read_text()))
    by_kind = {doc["kind"]: doc for doc in documents}
    assert sorted(by_kind) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"]
    config_map = by_kind["ConfigMap"]
    for file, proto_class in CONFIG_PROTOS.items():
        assert parse(proto_class, config_map["data"][file]) == parse(proto_class, (SERVING_DIR / file).read_text())

    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == image
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8500, "http": 8501}
    assert container["readinessProbe"]["httpGet"] == {"path": ready_path, "port": "http"}
    assert container["resources"]["requests"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"models": "/models", "config": "/config"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = by_kind["PersistentVolumeClaim"]
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    service_ports = {p["port"] for p in by_kind["Service"]["spec"]["ports"]}
    assert service_ports == {8500, 8501}
    assert by_kind["Service"]["spec"]["selector"] == by_kind["Deployment"]["spec"]["selector"]["matchLabels"]

    if name == "tfbig-embedded.yaml":
        assert container["command"] == ["tfbig", "serve"]
        options = check_config_args(container["args"])
        assert (options.engine, options.port, options.rest_api_port) == ("embedded", 8500, 8501)
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pod["terminationGracePeriodSeconds"] > pre_stop + options.drain_seconds
    else:
        check_config_args(container["args"])  # after the image's entrypoint, which sets the ports


def test_both_k8s_manifests_define_the_same_claim_and_config_map():
    def shared(name):
        documents = yaml.safe_load_all((SERVING_DIR / "k8s" / name).read_text())
        return [doc for doc in documents if doc["kind"] in ("ConfigMap", "PersistentVolumeClaim")]

    assert shared("tensorflow-model-server.yaml") == shared("tfbig-embedded.yaml")


def test_compose_file():
    compose = yaml.safe_load((SERVING_DIR / "compose.yaml").read_text())
    services = compose["services"]
    assert sorted(services) == ["tensorflow-serving", "tfbig"]
    for service in services.values():
        mounts = {target: source for source, target, mode in (v.split(":") for v in service["volumes"])
                  if mode == "ro"}
        assert len(mounts) == len(service["volumes"])  # everything read-only
        assert mounts.pop("/models") == "../models"
        assert mounts == {f"/config/{file}": f"./{file}" for file in CONFIG_PROTOS}
        assert all((SERVING_DIR / source).is_file() for source in mounts.values())
    assert services["tensorflow-serving"]["image"] == "tensorflow/serving:2.19.0"
    check_config_args(services["tensorflow-serving"]["command"])
    tfbig = services["tfbig"]
    assert tfbig["command"][:2] == ["tfbig", "serve"]
    assert check_config_args(tfbig["command"][2:]).engine == "embedded"
    assert {p.split(":")[1] for p in tfbig["ports"]} == {"8500", "8501"}


def test_a_bare_boolean_tf_serving_flag_is_passed_on_as_true():
    options = parse_serve_args(["--model_base_path=/m", "--enable_signature_method_name_check",
                                "--enable-profiler=false", "--load_retry_interval_micros=5",
                                "--enable_grpc_healthcheck_service"])
    assert options.pass_through == ("--enable_profiler=false", "--enable_signature_method_name_check=true")
    assert options.load_retry_interval_micros == 5 and options.enable_grpc_healthcheck_service
